"""The web dashboard, walked in headless Chromium as a person uses it.

A real daemon (`runyard serve`) with real tasks; Debian's Chromium through
Playwright. Every test signs in through the form. Screenshots of each page go
to `<pytest basetemp>/dashboard-screenshots/` (printed at the end of the module).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "acceptance"))

from runyard_harness import TEST_TOKEN, cli_env, free_port, start_daemon, stop_process  # noqa: E402

WAIT_MS = 20_000
# No single quotes: the task's script echoes them inside single quotes.
XSS_SCRIPT = '<script>window.__xss = "script"</script>'
XSS_IMG = '<img src=x onerror="window.__xss = 2">'

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
shutdown_timeout = "5s"
max_concurrent_runs = 8

[accounts.default]

[accounts.partner]
max_concurrent_runs = 2
runtime_allowance_minutes = 60
tasks = ["greet"]

[tasks.greet]
description = '''Greets. {xss_script} {xss_img}'''
automation = '''Greeter {xss_img}'''
cron = "*/10 * * * *"
env = {{ API_TOKEN = "hunter2-do-not-show", GREETING_STYLE = "loud" }}
run = '''
printf '\\033[32mgreen hello\\033[0m %s in a %s mood\\n' "$WHO" "$MOOD"
echo '{xss_script}'
echo '{xss_img}'
printf '[["col"],["%s"]]' '<img src=x onerror=window.__xss=1>' > "$RUNYARD_OUTPUT_DIR/table.json"
'''

[[tasks.greet.params]]
name = "who"
required = true

[[tasks.greet.params]]
name = "mood"
default = "calm"
choices = ["calm", "wild"]

[tasks.ticker]
max_concurrent = 4
run = 'for i in $(seq 1 40); do echo "tick $i"; sleep 0.25; done'

[tasks.slow]
max_concurrent = 4
graceful_stop = "2s"
run = 'while true; do echo "waiting for a stop"; sleep 0.3; done'

[tasks.flood]
run = 'for i in $(seq 1 20); do seq 1 5000; done'

[tasks.live-flood]
graceful_stop = "1s"
# A few thousand numbered lines a second until stopped.
run = 'n=0; while true; do seq $n $((n + 999)); n=$((n + 1000)); sleep 0.2; done'

[tasks.nightly]
cron = "0 3 * * *"
run = "true"
"""


@dataclass(frozen=True)
class Dashboard:
    url: str
    config: Path
    shots: Path

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TEST_TOKEN}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10.0, **kwargs)  # type: ignore[arg-type]


def _config_text(port: int, data_dir: Path) -> str:
    return CONFIG.format(port=port, data_dir=data_dir, xss_script=XSS_SCRIPT, xss_img=XSS_IMG)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    home = tmp_path_factory.mktemp("dashboard")
    shots = tmp_path_factory.getbasetemp() / "dashboard-screenshots"
    shots.mkdir(exist_ok=True)
    port = free_port()
    config = home / "runyard.toml"
    config.write_text(_config_text(port, home / "data"), encoding="utf-8")
    output = home / "daemon.log"
    process, url = start_daemon(config, cli_env(RUNYARD_TOKEN=TEST_TOKEN), output, port)
    try:
        yield Dashboard(url=url, config=config, shots=shots)
    finally:
        code = stop_process(process)
        print(f"\ndashboard screenshots: {shots}")
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
        if message.type == "error" and "401" not in message.text:
            problems.append(message.text)

    page.on("console", record)
    return problems


def sign_in(page: Page, dashboard: Dashboard, path: str = "/") -> None:
    page.goto(f"{dashboard.url}{path}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("API token").fill(TEST_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{dashboard.url}{path}")


def shoot(page: Page, dashboard: Dashboard, name: str) -> None:
    page.screenshot(path=str(dashboard.shots / f"{name}.png"), full_page=True)


def assert_accessible(page: Page) -> None:
    results = Axe().run(page)
    serious = [
        violation
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]
    assert not serious, [(v["id"], v["help"], [n["target"] for n in v["nodes"]]) for v in serious]


def assert_no_injection(page: Page) -> None:
    assert page.evaluate("() => window.__xss === undefined"), "a payload ran as script"
    assert page.locator("img[src=x]").count() == 0, "a payload became an element"


def trigger(dashboard: Dashboard, task: str, params: dict[str, str] | None = None) -> str:
    response = dashboard.api("POST", f"/api/tasks/{task}/run", json={"params": params or {}})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


def wait_ended(dashboard: Dashboard, run_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body: dict[str, object] = dashboard.api("GET", f"/api/runs/{run_id}").json()
        if body["status"] == "ended":
            return body
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not end")


# ----- sign in and out ------------------------------------------------------------------


def test_a_wrong_token_is_refused_and_the_right_one_opens_the_page_asked_for(
    dashboard: Dashboard, page: Page
) -> None:
    problems = watch_problems(page)
    page.goto(f"{dashboard.url}/runs?status=failed")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fruns%3Fstatus%3Dfailed$"))
    shoot(page, dashboard, "login")
    assert_accessible(page)
    page.get_by_label("API token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("not this daemon's API token")
    page.get_by_label("API token").fill(TEST_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{dashboard.url}/runs?status=failed")
    cookie = next(c for c in page.context.cookies() if c["name"] == "runyard_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{dashboard.url}/login")
    page.goto(f"{dashboard.url}/daemon")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fdaemon$"))
    assert problems == []


def test_next_must_be_a_local_path(dashboard: Dashboard, page: Page) -> None:
    page.goto(f"{dashboard.url}/login?next=https://elsewhere.example/")
    page.get_by_label("API token").fill(TEST_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{dashboard.url}/")


def _login_token(client: httpx.Client) -> str:
    form = client.get("/login")
    found = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert found is not None, form.text
    return found.group(1)


def test_five_failed_sign_ins_from_an_address_then_429(dashboard: Dashboard) -> None:
    # From 127.0.0.2, so the limit it reaches leaves the other tests' address alone.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=dashboard.url, timeout=10.0, transport=transport) as client:
        statuses = []
        for _ in range(6):
            answer = client.post(
                "/login", data={"token": "wrong", "login_token": _login_token(client), "next": "/"}
            )
            statuses.append(answer.status_code)
        assert statuses == [401] * 5 + [429], statuses
        assert int(answer.headers["retry-after"]) > 0
        assert "Too many failed sign-ins" in answer.text
        # Even the right token waits out the window: the limit is on the address.
        answer = client.post(
            "/login", data={"token": TEST_TOKEN, "login_token": _login_token(client), "next": "/"}
        )
        assert answer.status_code == 429
    # Another address signs in as usual.
    with httpx.Client(base_url=dashboard.url, timeout=10.0) as client:
        answer = client.post(
            "/login", data={"token": TEST_TOKEN, "login_token": _login_token(client), "next": "/"}
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"


# ----- pages and actions ------------------------------------------------------------------


def test_run_now_from_the_form_and_watch_the_log_arrive(dashboard: Dashboard, page: Page) -> None:
    problems = watch_problems(page)
    sign_in(page, dashboard, "/tasks/greet")
    expect(page.get_by_role("heading", name="Task greet")).to_be_visible()
    # Secret-looking env values are masked; others are shown.
    env = page.locator("#env")
    expect(env).to_contain_text("API_TOKEN")
    expect(env).not_to_contain_text("hunter2")
    expect(env).to_contain_text("loud")
    expect(page.locator("#schedule-words")).to_contain_text("every 10 minutes")
    expect(page.locator("#ticks li")).to_have_count(5)
    # The description and automation name hold payloads: shown as text.
    expect(page.locator("#task-description")).to_contain_text(XSS_SCRIPT)
    expect(page.locator("#automation")).to_have_text(f"Greeter {XSS_IMG}")
    # Required params are enforced by the form; choices come as a select with the default.
    expect(page.get_by_label("mood")).to_have_value("calm")
    page.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(f"{dashboard.url}/tasks/greet")  # the browser refused the empty field
    page.get_by_label("who").fill(XSS_IMG)
    page.get_by_label("mood").select_option("wild")
    page.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(re.compile(r"/runs/[0-9A-Z]{26}$"))
    log = page.locator("#log")
    expect(log.locator(".line").first).to_contain_text("green hello", timeout=WAIT_MS)
    expect(log.locator(".line .fg-32").first).to_have_text("green hello")
    expect(log).to_contain_text(XSS_SCRIPT)
    expect(log).to_contain_text(XSS_IMG)
    expect(log).to_have_attribute("data-finished", "true", timeout=WAIT_MS)
    expect(page.locator("#run-state")).to_have_text("success", timeout=WAIT_MS)
    expect(page.locator("#params")).to_contain_text(XSS_IMG)
    expect(page.locator("#params")).to_contain_text("wild")
    expect(page.get_by_role("table", name="table")).to_contain_text(
        "<img src=x onerror=window.__xss=1>"
    )
    assert_no_injection(page)
    # Search within the log.
    page.get_by_label("Search in log").fill("mood")
    expect(page.locator("#log .line.match")).to_have_count(1)
    expect(page.locator("#log-matches")).to_have_text("1 matching line shown")
    # The whole log downloads as text.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the whole log").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert "green hello" in text and XSS_SCRIPT in text
    shoot(page, dashboard, "run")
    assert_accessible(page)
    page.goto(f"{dashboard.url}/tasks/greet")
    expect(page.locator(".chart rect.bar")).not_to_have_count(0)
    assert_no_injection(page)
    shoot(page, dashboard, "task")
    assert_accessible(page)
    assert problems == []


def test_stop_a_running_run_then_run_it_again(dashboard: Dashboard, page: Page) -> None:
    problems = watch_problems(page)
    run_id = trigger(dashboard, "slow")
    sign_in(page, dashboard, f"/runs/{run_id}")
    expect(page.locator("#log")).to_contain_text("waiting for a stop", timeout=WAIT_MS)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#run-state")).to_have_text("running")  # dismissed: nothing stopped
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop").click()
    # The answer comes once the run has had its stop signal (up to graceful_stop).
    expect(page.get_by_role("status")).to_contain_text("Stop requested", timeout=WAIT_MS)
    expect(page.locator("#run-state")).to_have_text("stopped", timeout=WAIT_MS)
    page.get_by_role("button", name="Run again").click()
    expect(page).not_to_have_url(f"{dashboard.url}/runs/{run_id}")
    expect(page).to_have_url(re.compile(r"/runs/[0-9A-Z]{26}$"))
    again = page.url.rsplit("/", 1)[1]
    assert again != run_id
    expect(page.locator("#log")).to_contain_text("waiting for a stop", timeout=WAIT_MS)
    dashboard.api("POST", f"/api/runs/{again}/stop")
    wait_ended(dashboard, again)
    assert problems == []


def test_a_finished_runs_whole_log_shows_and_jump_to_end_reaches_it(
    dashboard: Dashboard, page: Page
) -> None:
    run_id = trigger(dashboard, "ticker")
    wait_ended(dashboard, run_id)
    sign_in(page, dashboard, f"/runs/{run_id}")
    expect(page.locator("#log")).to_have_attribute("data-finished", "true", timeout=WAIT_MS)
    expect(page.locator("#log .line")).to_have_count(40)
    page.get_by_role("button", name="Jump to end").click()
    expect(page.locator("#log .line").last).to_have_text("tick 40")


def test_a_flood_of_log_lines_is_capped_in_the_page(dashboard: Dashboard, page: Page) -> None:
    problems = watch_problems(page)
    run_id = trigger(dashboard, "flood")
    sign_in(page, dashboard, f"/runs/{run_id}")
    log = page.locator("#log")
    expect(log).to_have_attribute("data-finished", "true", timeout=WAIT_MS)
    # 100,000 lines were printed; the page keeps the last 2,000 and says so.
    expect(log.locator(".line")).to_have_count(2000)
    expect(log.locator(".line").last).to_have_text("5000")
    expect(log.locator(".note")).to_contain_text("98000 earlier lines are not shown")
    # Still responsive: the search answers over what is kept.
    page.get_by_label("Search in log").fill("4999")
    expect(page.locator("#log-matches")).to_have_text("1 matching line shown")
    assert problems == []


def test_a_live_flood_shows_one_unbroken_stretch_of_its_newest_lines(
    dashboard: Dashboard, page: Page
) -> None:
    problems = watch_problems(page)
    run_id = trigger(dashboard, "live-flood")
    try:
        sign_in(page, dashboard, f"/runs/{run_id}")
        log = page.locator("#log")
        expect(log.locator(".line").first).to_be_visible(timeout=WAIT_MS)
        page.wait_for_timeout(3000)  # a few updates into the flood
        numbers = [int(text) for text in log.locator(".line").all_text_contents()]
        assert 0 < len(numbers) <= 2000
        # Whatever was left out, the lines shown follow each other.
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        expect(log.locator(".note")).to_contain_text("earlier lines are not shown")
    finally:
        dashboard.api("POST", f"/api/runs/{run_id}/stop")
        wait_ended(dashboard, run_id)
    assert problems == []


def test_input_data_payloads_stay_text(dashboard: Dashboard, page: Page) -> None:
    # Task names cannot carry markup (the config allows [a-zA-Z0-9._-] only);
    # input data cells can.
    response = dashboard.api(
        "POST",
        "/api/tasks/greet/run",
        json={"params": {"who": "data"}, "data": [["cell", "other"], [XSS_SCRIPT, XSS_IMG]]},
    )
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    sign_in(page, dashboard, f"/runs/{run_id}")
    table = page.get_by_role("table", name="Input table 1")
    expect(table.get_by_role("cell", name=XSS_SCRIPT)).to_be_visible()
    expect(table.get_by_role("cell", name=XSS_IMG)).to_be_visible()
    assert_no_injection(page)


def test_pause_and_resume_a_schedule(dashboard: Dashboard, page: Page) -> None:
    sign_in(page, dashboard, "/tasks/nightly")
    expect(page.locator("#schedule-words")).to_contain_text("daily at 03:00")
    page.get_by_role("button", name="Pause schedule").click()
    expect(page.get_by_role("status")).to_have_text("Schedule paused.")
    expect(page.locator("#task-state")).to_have_text("paused")
    assert dashboard.api("GET", "/api/tasks/nightly").json()["paused"] is True
    page.get_by_role("button", name="Resume schedule").click()
    expect(page.get_by_role("status")).to_have_text("Schedule resumed.")
    expect(page.locator("#task-state")).to_have_text("scheduled")
    assert dashboard.api("GET", "/api/tasks/nightly").json()["paused"] is False


def test_filter_runs_and_follow_a_link(dashboard: Dashboard, page: Page) -> None:
    run_id = trigger(dashboard, "greet", {"who": "filter-me"})
    wait_ended(dashboard, run_id)
    sign_in(page, dashboard, "/runs")
    page.get_by_label("Task", exact=True).select_option("greet")
    page.get_by_label("Status or end reason").select_option("success")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"/runs\?status=success&task_name=greet&"))
    rows = page.locator("table.runs tbody tr")
    expect(rows.first).to_be_visible()
    for row in rows.all():
        expect(row).to_contain_text("greet")
        expect(row).to_contain_text("success")
    shoot(page, dashboard, "runs")
    assert_accessible(page)
    page.get_by_role("link", name=run_id).click()
    expect(page).to_have_url(f"{dashboard.url}/runs/{run_id}")
    expect(page.locator("#params")).to_contain_text("filter-me")
    # Trigger and creation-day filters, as a person sets them.
    page.goto(f"{dashboard.url}/runs")
    page.get_by_label("Trigger").select_option("cron")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".empty")).to_contain_text("No run matches these filters")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    page.get_by_label("Trigger").select_option("api")
    page.get_by_label("Created from").fill(today)
    page.get_by_label("Created to").fill(today)
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(
        re.compile(f"triggered_by=api&created_from={today}&created_to={today}")
    )
    expect(page.get_by_role("link", name=run_id)).to_be_visible()
    page.goto(f"{dashboard.url}/runs?created_from=yesterday")
    expect(page.get_by_role("alert")).to_contain_text("created_from: must be a date")
    # A search with no match says so.
    page.goto(f"{dashboard.url}/runs?search=no-such-run-anywhere")
    expect(page.locator(".empty")).to_contain_text("No run matches these filters")
    # A bad value is named, not a 500.
    response = page.goto(f"{dashboard.url}/runs?status=bogus")
    assert response is not None and response.status == 200
    expect(page.get_by_role("alert")).to_contain_text("status: must be one of")


def test_bulk_stop_the_selected_runs(dashboard: Dashboard, page: Page) -> None:
    first, second = trigger(dashboard, "slow"), trigger(dashboard, "slow")
    sign_in(page, dashboard, "/runs?task_name=slow&status=running")
    page.get_by_label(f"Select run {first}").check()
    page.get_by_label(f"Select run {second}").check()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop selected").click()
    expect(page.get_by_role("status")).to_have_text("Stopped: 2 runs.")
    assert wait_ended(dashboard, first)["end_reason"] == "stopped"
    assert wait_ended(dashboard, second)["end_reason"] == "stopped"


def test_create_and_revoke_a_key(dashboard: Dashboard, page: Page) -> None:
    sign_in(page, dashboard, "/accounts")
    partner = page.locator("section.account", has=page.get_by_role("heading", name="partner"))
    expect(partner).to_contain_text("of 60")
    expect(partner).to_contain_text("of 2")
    partner.get_by_label("Label for a new key").fill(XSS_SCRIPT)
    partner.get_by_role("button", name="Create a key for partner").click()
    key = page.locator("#new-key").inner_text()
    assert key.startswith("ryk_")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    expect(page.locator(".copied")).not_to_be_empty()
    shoot(page, dashboard, "accounts")
    assert_accessible(page)
    assert_no_injection(page)
    # The key works, and shows as used.
    answer = httpx.post(f"{dashboard.url}/api/v3/list-automations", json={"key": key}, timeout=10.0)
    assert answer.status_code == 200, answer.text
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)  # shown once only
    key_id = key.split("_")[1]
    row = page.locator("tr", has_text=key_id)
    expect(row).to_contain_text(XSS_SCRIPT)
    expect(row).not_to_contain_text("never")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Revoke key {key_id}").click()
    expect(page.get_by_role("status")).to_have_text(f"Key {key_id} revoked.")
    answer = httpx.post(f"{dashboard.url}/api/v3/list-automations", json={"key": key}, timeout=10.0)
    assert answer.status_code == 401


def test_reload_the_config_with_an_error_then_without(dashboard: Dashboard, page: Page) -> None:
    sign_in(page, dashboard, "/daemon")
    expect(page.locator("#daemon-version")).not_to_be_empty()
    shoot(page, dashboard, "daemon")
    assert_accessible(page)
    good = dashboard.config.read_text(encoding="utf-8")
    try:
        dashboard.config.write_text(
            good + '\n[tasks.broken]\nrun = "true"\ncron = "not a cron"\nmax_queued = -1\n',
            encoding="utf-8",
        )
        page.get_by_role("button", name="Reload config").click()
        report = page.locator("#reload-report")
        expect(report).to_contain_text("Not reloaded")
        expect(report.locator("li")).to_have_count(2)
        expect(report).to_contain_text("tasks.broken.cron")
        expect(report).to_contain_text("tasks.broken.max_queued")
        dashboard.config.write_text(good + '\n[tasks.added]\nrun = "true"\n', encoding="utf-8")
        page.get_by_role("button", name="Reload config").click()
        expect(page.locator("#reload-report")).to_contain_text("Added: added")
    finally:
        dashboard.config.write_text(good, encoding="utf-8")
        assert dashboard.api("POST", "/api/daemon/reload").status_code == 200


def test_the_overview_updates_live_when_runs_start_and_end(
    dashboard: Dashboard, page: Page
) -> None:
    problems = watch_problems(page)
    sign_in(page, dashboard, "/")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    main = page.locator("main")
    refreshed = main.get_attribute("data-refreshed") or "0"
    run_id = trigger(dashboard, "greet", {"who": "live"})
    expect(page.locator(f'#activity a[href="/runs/{run_id}"]')).to_be_visible(timeout=WAIT_MS)
    assert (main.get_attribute("data-refreshed") or "0") != refreshed  # no page load
    wait_ended(dashboard, run_id)
    greet = page.locator("table.tasks tr", has_text="greet")
    expect(greet.locator(".strip .cell").last).to_have_class(re.compile("ok"), timeout=WAIT_MS)
    assert_no_injection(page)
    shoot(page, dashboard, "overview")
    assert_accessible(page)
    assert problems == []


def test_every_page_is_readable_at_390_px_and_reachable_by_keyboard(
    dashboard: Dashboard, browser: Browser
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        sign_in(page, dashboard, "/")
        for path in ("/", "/runs", "/tasks/greet", "/accounts", "/daemon"):
            page.goto(f"{dashboard.url}{path}")
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
            shoot(page, dashboard, "narrow" + path.replace("/", "-").rstrip("-"))
        # Keyboard: tab from the top reaches the nav, then Run now on the task page.
        page.goto(f"{dashboard.url}/tasks/greet")
        reached = set()
        for _ in range(60):
            page.keyboard.press("Tab")
            reached.add(page.evaluate("() => document.activeElement.textContent.trim()"))
        assert {"Overview", "Runs", "Accounts", "Daemon", "Sign out", "Run now"} <= reached
        page.keyboard.press("Shift+Tab")
        page.get_by_label("who").focus()
        page.keyboard.type("keyboard")
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/runs/[0-9A-Z]{26}$"))
    finally:
        context.close()
