"""/docs renders in a real browser that may reach nothing but the daemon."""

from __future__ import annotations

from conftest import V3Daemon
from playwright.sync_api import Page, Route, expect


def test_swagger_ui_renders_with_every_other_host_unreachable(
    v3_daemon: V3Daemon, page: Page
) -> None:
    elsewhere: list[str] = []

    def only_the_daemon(route: Route) -> None:
        if route.request.url.startswith(v3_daemon.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_daemon)
    page.goto(f"{v3_daemon.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("runyard")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert elsewhere == []
