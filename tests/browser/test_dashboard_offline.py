"""The dashboard's error state: the daemon goes away under an open page."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "acceptance"))

from runyard_harness import TEST_TOKEN, cli_env, free_port, start_daemon, stop_process  # noqa: E402

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
shutdown_timeout = "5s"

[tasks.idle]
run = "true"
"""


def test_a_page_says_when_runyard_is_unreachable(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("offline")
    port = free_port()
    config = home / "runyard.toml"
    config.write_text(CONFIG.format(port=port, data_dir=home / "data"), encoding="utf-8")
    process, url = start_daemon(config, cli_env(RUNYARD_TOKEN=TEST_TOKEN), home / "log", port)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{url}/")
        expect(page).to_have_url(re.compile(r"/login"))
        page.get_by_label("API token").fill(TEST_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        expect(page.locator("#offline")).to_be_hidden()
        assert stop_process(process) == 0
        expect(page.get_by_role("alert")).to_have_text(
            "runyard is unreachable — retrying…", timeout=20_000
        )
        # The page is still there to read.
        expect(page.get_by_role("link", name="idle")).to_be_visible()
    finally:
        context.close()
        stop_process(process)
