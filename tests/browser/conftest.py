"""Fixtures: a real daemon with v3 automations, an account key, and headless Chromium.

The browser is Debian's `/usr/bin/chromium` driven by Playwright: no browser
download. The tests fail (never skip) when it is missing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "acceptance"))

from runyard_harness import (  # noqa: E402
    TEST_TOKEN,
    cli_env,
    free_port,
    run_cli,
    start_daemon,
    stop_process,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TICKS = 12  # half a second each: the run lasts long enough to watch lines arrive

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
shutdown_timeout = "5s"
max_concurrent_runs = 8

[tasks.ticker]
automation = "Ticker"
max_concurrent = 4  # the tests share one daemon: a second Ticker must start, not queue
run = '''
for i in $(seq 1 {ticks}); do echo "tick $i"; sleep 0.5; done
echo '<b id="injected">not markup</b>'
echo "ticker: finished" >&2
printf 'a,b\\n1,2\\n' > "$RUNYARD_OUTPUT_DIR/sheet.csv"
'''

[tasks.slow]
automation = "Slow"
# Repeats its line: follow_log can hold back a run's only line until more output comes
# (written before the follower subscribed, not yet flushed to the file). This task is
# for the Stop button, not for that.
run = 'while true; do echo "waiting for a stop"; sleep 0.5; done'
graceful_stop = "2s"
"""


@dataclass(frozen=True)
class V3Daemon:
    """A running daemon and an account key to trigger its automations with."""

    url: str
    key: str

    def trigger(self, name: str, data: object = None) -> str:
        """Trigger the automation `name` through /api/v3/trigger; return the viewer link."""
        body: dict[str, object] = {"key": self.key, "name": name}
        if data is not None:
            body["data"] = data
        response = httpx.post(f"{self.url}/api/v3/trigger", json=body, timeout=10.0)
        assert response.status_code == 200, response.text
        link: str = response.json()["OPEN LINK IN BROWSER"]
        return link


def _create_key(config: Path, env: dict[str, str]) -> str:
    done = run_cli("--config", str(config), "keys", "create", "--account", "default", env=env)
    assert done.returncode == 0, f"`runyard keys create` failed:\n{done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def v3_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V3Daemon]:
    """Start `runyard serve` with the Ticker and Slow automations; stop it with SIGTERM."""
    home = tmp_path_factory.mktemp("viewer")
    port = free_port()
    config = home / "runyard.toml"
    config.write_text(
        CONFIG.format(port=port, data_dir=home / "data", ticks=TICKS), encoding="utf-8"
    )
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
    output = home / "daemon.log"
    process, url = start_daemon(config, env, output, port)
    try:
        yield V3Daemon(url=url, key=_create_key(config, env))
    finally:
        code = stop_process(process)
    assert code == 0, f"daemon exited {code}; its output:\n{output.read_text(errors='replace')}"


# Module scope, not session: Playwright's sync API keeps an asyncio loop
# running in the main thread while it is open, which would break every async
# test that runs after this module.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Launch Debian's Chromium headless; fail when it is not installed."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
        "(apt-get install chromium); .ci/run installs it"
    )
    # An in-process engine run earlier (runyard.engine.process) may have left
    # the policy a pidfd child watcher tied to its closed loop; Playwright's
    # driver is a subprocess of a new loop, so give it a watcher of its own.
    if sys.version_info < (3, 12):
        asyncio.get_event_loop_policy().set_child_watcher(asyncio.ThreadedChildWatcher())
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """Return a fresh page in its own context (no shared cookies or cache)."""
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()
