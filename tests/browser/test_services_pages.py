"""The services pages in headless Chromium, over a real daemon with real service processes.

`web` is Python's http.server behind an HTTP health check; `gate` never passes
its check, so `worker`, which depends on it, stays waiting. Stop, Start and
Restart are clicked as a person clicks them (the confirmations accepted).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "acceptance"))

from runyard_harness import (  # noqa: E402
    TEST_TOKEN,
    cli_env,
    free_port,
    start_daemon,
    stop_process,
    until,
)
from support.processes import is_alive  # noqa: E402

WAIT_MS = 20_000

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
shutdown_timeout = "5s"

[tasks.hello]
run = "echo hi"

[services.web]
run = "exec {python} -m http.server {web_port} --bind 127.0.0.1"
graceful_stop = "2s"
restart_delay = "200ms"

[services.web.health_check]
http = "http://127.0.0.1:{web_port}/"
interval = "200ms"
timeout = "2s"

[services.gate]
run = "exec sleep 600"
health_check = {{ run = "echo gate shut; exit 1", interval = "500ms", start_period = "1h" }}

[services.worker]
run = "exec sleep 600"
depends_on = ["gate"]
"""


@dataclass(frozen=True)
class Daemon:
    url: str

    def service(self, name: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/api/services/{name}",
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
            timeout=10.0,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def instance(self, name: str) -> dict[str, Any]:
        (only,) = self.service(name)["instances"]
        found: dict[str, Any] = only
        return found


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("services-dashboard")
    port = free_port()
    config = home / "runyard.toml"
    config.write_text(
        CONFIG.format(
            port=port, data_dir=home / "data", python=sys.executable, web_port=free_port()
        ),
        encoding="utf-8",
    )
    output = home / "daemon.log"
    process, url = start_daemon(config, cli_env(RUNYARD_TOKEN=TEST_TOKEN), output, port)
    try:
        yield Daemon(url=url)
    finally:
        code = stop_process(process)
    assert code == 0, f"daemon exited {code}; its output:\n{output.read_text(errors='replace')}"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def watch_problems(page: Page) -> list[str]:
    """Collect script errors and CSP violations the page reports."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))

    def record(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", record)
    return problems


def sign_in(page: Page, daemon: Daemon, path: str) -> None:
    page.goto(f"{daemon.url}{path}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("API token").fill(TEST_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{daemon.url}{path}")


def assert_no_axe_violations(page: Page) -> None:
    violations = Axe().run(page).response["violations"]
    assert not violations, [
        (v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]]) for v in violations
    ]


def row(page: Page, service: str) -> Locator:
    return page.locator(f'tbody[data-service="{service}"] tr[data-instance="0"]')


def healthy_pid(daemon: Daemon) -> int:
    """Wait until `web` is healthy; return its pid."""
    until(lambda: daemon.instance("web")["state"] == "healthy")
    pid: int = daemon.instance("web")["pid"]
    return pid


def test_the_services_page_shows_a_healthy_service_and_a_waiting_dependant(
    daemon: Daemon, page: Page
) -> None:
    problems = watch_problems(page)
    pid = healthy_pid(daemon)
    sign_in(page, daemon, "/services")
    expect(page.get_by_role("heading", name="Services", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Services", exact=True)).to_have_attribute(
        "aria-current", "page"
    )
    web = row(page, "web")
    expect(web.locator("[data-state]")).to_have_text("healthy")
    expect(web).to_contain_text(str(pid))
    expect(web).to_contain_text("passed: HTTP 200")
    expect(web).to_contain_text(re.compile(r"up \d+"))
    worker = row(page, "worker")
    expect(worker.locator("[data-state]")).to_have_text("waiting")
    expect(worker).to_contain_text("waiting for gate")
    gate = row(page, "gate")
    expect(gate).to_contain_text("failed: exit 1: gate shut", timeout=WAIT_MS)
    # The page refreshes itself without a reload.
    main = page.locator("main")
    expect(main).to_have_attribute("data-refreshed", re.compile(r"[1-9]"), timeout=WAIT_MS)
    assert_no_axe_violations(page)

    page.get_by_role("link", name="web", exact=True).click()
    expect(page).to_have_url(f"{daemon.url}/services/web")
    expect(page.get_by_role("heading", name="Service web")).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text("http.server")
    expect(page.locator('tr[data-instance="0"] [data-state]')).to_have_text("healthy")
    assert_no_axe_violations(page)

    page.goto(f"{daemon.url}/services/worker")
    expect(page.locator("#dependencies")).to_contain_text("gate not ready")
    assert_no_axe_violations(page)

    assert problems == []
    answer = page.goto(f"{daemon.url}/services/nope")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("No service is called nope.")).to_be_visible()


def test_stop_start_and_restart_a_service_by_clicking(daemon: Daemon, page: Page) -> None:
    problems = watch_problems(page)
    first = healthy_pid(daemon)
    sign_in(page, daemon, "/services")
    page.on("dialog", lambda dialog: dialog.accept())

    page.get_by_role("button", name="Stop web", exact=True).click()
    expect(page).to_have_url(f"{daemon.url}/services")
    web = row(page, "web")
    expect(web.locator("[data-state]")).to_have_text("stopped")
    assert daemon.instance("web")["state"] == "stopped"
    assert daemon.instance("web")["pid"] is None
    assert not is_alive(first)
    # What the action did stays on screen while the page refreshes itself.
    flash = page.get_by_role("status")
    expect(flash).to_have_text("Stopped web (stopped).")
    main = page.locator("main")
    refreshed = int(main.get_attribute("data-refreshed") or "0")
    expect(main).to_have_attribute("data-refreshed", str(refreshed + 1), timeout=WAIT_MS)
    expect(flash).to_have_text("Stopped web (stopped).")

    page.get_by_role("button", name="Start web", exact=True).click()
    expect(web.locator("[data-state]")).to_have_text("healthy", timeout=WAIT_MS)
    second = daemon.instance("web")["pid"]
    assert second != first and is_alive(second)
    expect(web).to_contain_text(str(second))

    page.get_by_role("button", name="Restart web", exact=True).click()
    until(lambda: daemon.instance("web")["pid"] not in (None, second))
    third = daemon.instance("web")["pid"]
    expect(web).to_contain_text(str(third), timeout=WAIT_MS)
    expect(web.locator("[data-state]")).to_have_text("healthy", timeout=WAIT_MS)
    assert not is_alive(second) and is_alive(third)
    assert problems == []


def test_the_overview_counts_services_ready(daemon: Daemon, page: Page) -> None:
    healthy_pid(daemon)
    sign_in(page, daemon, "/")
    # web is ready; gate (never healthy) and worker (waiting) are not.
    expect(page.locator("#services-up")).to_have_text("1 / 3")
    page.get_by_role("link", name=re.compile("services ready")).click()
    expect(page).to_have_url(f"{daemon.url}/services")


def test_the_services_pages_fit_a_phone_and_pass_axe_in_the_dark(
    daemon: Daemon, browser: Browser
) -> None:
    healthy_pid(daemon)
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    try:
        page = context.new_page()
        sign_in(page, daemon, "/services")
        for path in ("/services", "/services/web", "/services/worker"):
            page.goto(f"{daemon.url}{path}")
            expect(page.locator("main h1")).to_be_visible()
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
            assert_no_axe_violations(page)
    finally:
        context.close()
