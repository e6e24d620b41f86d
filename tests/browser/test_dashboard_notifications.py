"""The dashboard's notifications page in headless Chromium, against a real daemon."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "acceptance"))
from runyard_harness import TEST_TOKEN, cli_env, free_port, start_daemon, stop_process  # noqa: E402

XSS_IMG = '<img src=x onerror="window.__xss = 2">'

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
shutdown_timeout = "5s"

[notifiers.inbox]

[[routes]]
kinds = ["failed", "recovered"]
notifiers = ["inbox"]

[tasks.broken]
run = '''echo '{xss}'; exit 3'''
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("dashboard-notifications")
    port = free_port()
    config = home / "runyard.toml"
    config.write_text(CONFIG.format(port=port, data_dir=home / "data", xss=XSS_IMG), "utf-8")
    output = home / "daemon.log"
    process, url = start_daemon(config, cli_env(RUNYARD_TOKEN=TEST_TOKEN), output, port)
    try:
        yield url
    finally:
        code = stop_process(process)
    assert code == 0, f"daemon exited {code}; its output:\n{output.read_text(errors='replace')}"


def api(url: str, method: str, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TEST_TOKEN}"}
    return httpx.request(method, f"{url}{path}", headers=headers, timeout=30.0)


def test_the_notifications_page_lists_them_as_text(daemon: str, browser: Browser) -> None:
    ran = api(daemon, "POST", "/api/tasks/broken/run?wait=true")
    assert ran.status_code == 201, ran.text
    run_id = ran.json()["id"]
    deadline = time.monotonic() + 20
    while api(daemon, "GET", "/api/notifications").json()["total"] < 1:
        assert time.monotonic() < deadline, "no notification was stored"
        time.sleep(0.1)

    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page: Page = context.new_page()
        page.goto(f"{daemon}/notifications")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.get_by_label("API token").fill(TEST_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{daemon}/notifications")
        expect(page.get_by_role("heading", name="Notifications")).to_be_visible()
        expect(page.get_by_role("link", name="Notifications")).to_have_attribute(
            "aria-current", "page"
        )
        row = page.locator("table.notifications tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("failed")
        expect(row).to_contain_text("in-app")
        page.get_by_text("runyard: broken failed (exit 3)").click()
        # The log line in the message is shown as text, never as markup.
        expect(page.locator("table.notifications pre")).to_contain_text(XSS_IMG)
        assert page.evaluate("() => window.__xss === undefined"), "a payload ran as script"
        assert page.locator("img[src=x]").count() == 0, "a payload became an element"
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390

        results = Axe().run(page)
        serious = [
            violation
            for violation in results.response["violations"]
            if violation["impact"] in ("serious", "critical")
        ]
        assert not serious, [(v["id"], v["help"]) for v in serious]

        page.get_by_role("link", name=run_id).click()
        expect(page).to_have_url(f"{daemon}/runs/{run_id}")

        page.goto(f"{daemon}/notifications?status=dropped")
        expect(page.locator(".empty")).to_contain_text("No notification is dropped")
    finally:
        context.close()
