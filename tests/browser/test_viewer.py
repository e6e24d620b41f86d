"""The run viewer a v3 trigger links to, opened in headless Chromium."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
from playwright.sync_api import ConsoleMessage, Page, expect

if TYPE_CHECKING:
    from conftest import V3Daemon  # the v3_daemon fixture's type; conftest is not imported

URL_INPUT = [["url"], ["https://example.com/1"]]
WAIT_MS = 20_000
TICK = re.compile(r"^tick \d+$")


def tick_lines(page: Page) -> int:
    return page.locator("#log .line .text", has_text=TICK).count()


def with_query(link: str, **changes: str | None) -> str:
    """Return `link` with query parameters replaced (None removes one)."""
    parts = urlsplit(link)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def wait_for_more_ticks(page: Page, than: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while (count := tick_lines(page)) <= than:
        assert time.monotonic() < deadline, f"no new log line after {than} within {timeout}s"
        page.wait_for_timeout(100)
    return count


def test_the_viewer_follows_a_running_run_to_its_end(v3_daemon: V3Daemon, page: Page) -> None:
    problems: list[str] = []  # script errors, CSP violations, failed loads
    page.on("pageerror", lambda error: problems.append(str(error)))

    def record(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", record)
    link = v3_daemon.trigger("Ticker", URL_INPUT)
    response = page.goto(link)
    assert response is not None and response.status == 200

    badge = page.locator("#badge")
    expect(page.locator("#automation")).to_have_text("Ticker")
    expect(badge).to_have_text("Running", timeout=WAIT_MS)
    expect(page.locator("#stop")).to_be_enabled()

    # New lines arrive over the live stream, with no reload, while the run still runs.
    page.evaluate("window.loadedOnce = true")
    first = wait_for_more_ticks(page, 0)
    later = wait_for_more_ticks(page, first)
    assert later > first
    expect(badge).to_have_text("Running")
    expect(page.locator("#duration")).not_to_have_text("–")

    expect(badge).to_have_text("Success", timeout=WAIT_MS)
    assert page.evaluate("window.loadedOnce") is True, "the page was reloaded"
    assert tick_lines(page) == 12
    expect(page.locator("#log .line.stderr")).to_have_count(1)
    expect(page.locator("#log .line.stderr")).to_contain_text("ticker: finished")
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#outcome")).to_have_text("success (exit code 0)")
    expect(page.locator("#ended")).not_to_have_text("–")
    expect(page.locator("#queued")).to_be_hidden()

    # Run data is shown as text, never as markup.
    expect(page.locator("#log")).to_contain_text('<b id="injected">not markup</b>')
    expect(page.locator("#injected")).to_have_count(0)

    # The run's own description: several lines, kept as they are.
    description = page.locator("#description")
    expect(description).to_contain_text("Succeeded after")
    assert "\n" in description.inner_text()
    input_cells = page.locator("#input th, #input td")
    expect(input_cells).to_have_text(["url", "https://example.com/1"])
    expect(page.locator("#output h3")).to_have_text(["sheet"])
    expect(page.locator("#output th, #output td")).to_have_text(["a", "b", "1", "2"])
    assert problems == []


def test_the_stop_button_stops_the_run(v3_daemon: V3Daemon, page: Page) -> None:
    link = v3_daemon.trigger("Slow")
    page.goto(link)
    badge = page.locator("#badge")
    expect(badge).to_have_text("Running", timeout=WAIT_MS)
    expect(page.locator("#log")).to_contain_text("waiting for a stop", timeout=WAIT_MS)

    with page.expect_response("**/api/v3/stop") as stopped:
        page.locator("#stop").click()
    assert stopped.value.status == 200
    assert stopped.value.json() == {"stopped": link.split("host=c-00")[1][:2]}

    expect(badge).to_have_text("Failure", timeout=WAIT_MS)
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#outcome")).to_contain_text("stopped")
    expect(page.locator("#log-state")).to_contain_text("ended")


def test_a_wrong_or_missing_password_shows_not_found(v3_daemon: V3Daemon, page: Page) -> None:
    link = v3_daemon.trigger("Ticker")
    for changed in (with_query(link, password="wrong"), with_query(link, password=None)):
        response = page.goto(changed)
        assert response is not None and response.status == 404
        expect(page.locator("h1")).to_have_text("Run not found")
        expect(page.locator("#log")).to_have_count(0)
    # The right password still opens it.
    response = page.goto(link)
    assert response is not None and response.status == 200
    expect(page.locator("#automation")).to_have_text("Ticker")


def test_the_page_and_its_data_carry_no_secret_onwards(v3_daemon: V3Daemon) -> None:
    link = v3_daemon.trigger("Ticker")
    parts = urlsplit(link)
    password = parse_qs(parts.query)["password"][0]
    run_path = parts.path
    page = httpx.get(link)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert password not in page.text  # the page is a shell; its script reads the URL

    state = httpx.get(f"{v3_daemon.url}{run_path}/state", params={"password": password})
    assert state.status_code == 200
    assert state.headers["cache-control"] == "no-store"
    body = state.json()
    assert body["automation"] == "Ticker" and body["task_name"] == "ticker"
    assert body["status"] == "Running" and body["phase"] in ("pending", "running")

    for params in ({"password": "wrong"}, {}):
        for suffix in ("/state", "/log"):
            refused = httpx.get(f"{v3_daemon.url}{run_path}{suffix}", params=params)
            assert refused.status_code == 404, suffix
            assert refused.json() == {"status": "error", "message": "Run not found."}
