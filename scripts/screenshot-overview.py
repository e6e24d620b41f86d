"""Take docs/screenshot-overview.png: the example config served, a few runs, the overview.

Run from the repository root with the dev tools installed:
    .venv/bin/python scripts/screenshot-overview.py
It starts `runyard serve` on a free port in a temporary directory, triggers
some runs through the REST API, signs in to the dashboard in Debian's
Chromium and saves the overview page.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "acceptance"))

from runyard_harness import TEST_TOKEN, cli_env, free_port, start_daemon, stop_process  # noqa: E402

OUT = ROOT / "docs" / "screenshot-overview.png"


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="runyard-shot-"))
    port = free_port()
    config = home / "runyard.toml"
    text = (ROOT / "runyard" / "examples" / "runyard.toml").read_text(encoding="utf-8")
    text = text.replace("port = 9477", f'port = {port}\ndata_dir = "{home / "data"}"', 1)
    config.write_text(text, encoding="utf-8")
    process, url = start_daemon(config, cli_env(RUNYARD_TOKEN=TEST_TOKEN), home / "log", port)
    headers = {"Authorization": f"Bearer {TEST_TOKEN}"}
    try:
        for task, params in [
            ("hello", {"who": "runyard"}),
            ("disk-report", {}),
            ("flaky", {}),
            ("hello", {}),
            ("flaky", {}),
            ("flaky", {}),
            ("flaky", {}),
            ("disk-report", {}),
            ("slow-count", {}),
        ]:
            httpx.post(
                f"{url}/api/tasks/{task}/run", json={"params": params}, headers=headers
            ).raise_for_status()
            time.sleep(0.3)
        time.sleep(6)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}/login")
            page.get_by_label("API token").fill(TEST_TOKEN)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{url}/")
            page.screenshot(path=str(OUT), full_page=True)
            browser.close()
        print(f"saved {OUT}")
    finally:
        stop_process(process)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
