"""The daemon page's Cluster section in headless Chromium, over two real nodes on PostgreSQL.

`alpha` and `bravo` are two `runyard serve` processes on one database made
for this module; bravo's config has a task alpha's lacks, so their config
hashes differ and the page flags bravo. Checked as a person sees it, on a
wide screen and a phone in the dark, with axe.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "acceptance"))

from runyard_harness import (  # noqa: E402
    TEST_TOKEN,
    cli_env,
    free_port,
    start_daemon,
    stop_process,
    until,
)

pytestmark = pytest.mark.postgres

POSTGRES_URL = os.environ.get(
    "RUNYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
node_name = "{name}"
shutdown_timeout = "5s"

[tasks.slow]
run = "sleep 600"
{extra}"""

BRAVO_ONLY = """
[tasks.only-on-bravo]
run = "true"
"""


@dataclass(frozen=True)
class Nodes:
    alpha: str
    bravo: str


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """alpha and bravo on a database of their own; bravo runs one task more."""
    server = sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = f"runyard_cluster_ui_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    database = server.set(database=name).render_as_string(hide_password=False)
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN, RUNYARD_DATABASE_URL=database)
    home = tmp_path_factory.mktemp("cluster-dashboard")
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        urls = []
        for node, extra in (("alpha", ""), ("bravo", BRAVO_ONLY)):
            port = free_port()
            config = home / f"{node}.toml"
            config.write_text(
                CONFIG.format(port=port, data_dir=home / node, name=node, extra=extra),
                encoding="utf-8",
            )
            output = home / f"{node}.log"
            process, url = start_daemon(config, env, output, port)
            started.append((process, output))
            urls.append(url)
        yield Nodes(alpha=urls[0], bravo=urls[1])
    finally:
        codes = [(stop_process(process), output) for process, output in started]
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    for code, output in codes:
        assert code == 0, f"node exited {code}; its output:\n{output.read_text(errors='replace')}"


def sign_in(page: Page, url: str, path: str) -> None:
    page.goto(f"{url}{path}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("API token").fill(TEST_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}{path}")


def assert_no_axe_violations(page: Page) -> None:
    violations = Axe().run(page).response["violations"]
    assert not violations, [
        (v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]]) for v in violations
    ]


def trigger(url: str, task: str) -> str:
    response = httpx.post(
        f"{url}/api/tasks/{task}/run",
        headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


def cluster(url: str) -> dict[str, dict[str, object]]:
    response = httpx.get(
        f"{url}/api/cluster", headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return {node["name"]: node for node in response.json()["nodes"]}


def test_the_daemon_page_shows_the_nodes_and_the_config_mismatch(
    nodes: Nodes, browser: Browser
) -> None:
    trigger(nodes.bravo, "slow")
    until(lambda: cluster(nodes.alpha)["bravo"]["running_runs"] == 1)
    listed = cluster(nodes.alpha)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        sign_in(page, nodes.alpha, "/daemon")
        section = page.locator("#cluster")
        expect(section.get_by_role("heading", name="Cluster")).to_be_visible()
        expect(section).to_contain_text("2 nodes share this database; this page comes from alpha")

        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("Config mismatch: bravo runs a different config")

        alpha = section.locator('tr[data-node="alpha"]')
        expect(alpha).to_contain_text("(this node)")
        expect(alpha).to_contain_text(nodes.alpha)
        expect(alpha.locator("[data-lease]")).to_contain_text(re.compile(r"live renewed \d"))
        expect(alpha.locator("[data-running]")).to_have_text("0")
        expect(alpha.locator("[data-config]")).to_have_text(str(listed["alpha"]["config_hash"]))

        bravo = section.locator('tr[data-node="bravo"]')
        expect(bravo).not_to_contain_text("(this node)")
        expect(bravo.locator("[data-running]")).to_have_text("1")
        expect(bravo.locator("[data-config]")).to_have_text(
            f"{listed['bravo']['config_hash']} differs"
        )
        assert listed["alpha"]["config_hash"] != listed["bravo"]["config_hash"]
        assert_no_axe_violations(page)

        # The URL leads to that node's own daemon page (its own sign-in).
        bravo.get_by_role("link", name="Daemon page of bravo").click()
        expect(page).to_have_url(re.compile(re.escape(nodes.bravo) + r"/login\?next="))
    finally:
        context.close()


def test_the_cluster_section_fits_a_phone_and_passes_axe_in_the_dark(
    nodes: Nodes, browser: Browser
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    try:
        page = context.new_page()
        sign_in(page, nodes.bravo, "/daemon")
        expect(page.locator("#cluster")).to_contain_text("this page comes from bravo")
        # Two nodes, two configs: a tie, which goes to the answering node's
        # hash (as in `runyard cluster`), so bravo's page flags alpha.
        expect(page.get_by_role("alert")).to_contain_text("Config mismatch: alpha runs a different")
        expect(page.locator('tr[data-node="alpha"] [data-config]')).to_contain_text("differs")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, width
        assert_no_axe_violations(page)
    finally:
        context.close()
