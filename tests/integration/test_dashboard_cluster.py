"""The daemon page's Cluster section over HTTP: the nodes of `GET /api/cluster`, and a mismatch.

On PostgreSQL the daemon is a node; two more nodes are registered beside it
through the real registry (one with another config, with a run running, one
whose lease ran out). On SQLite there are no nodes and the section is not
shown. The browser walk with real node processes is in
tests/browser/test_cluster_dashboard.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.domain.models import Run, RunStatus
from runyard.store.nodes import NodeIdentity, NodeRegistry
from runyard.store.schema import nodes as nodes_table

CONFIG = """
[daemon]
data_dir = "data"
node_name = "alpha"
external_url = "http://alpha.lan:9477"
shutdown_timeout = "5s"

[tasks.hello]
run = "echo hi"
"""


@pytest.fixture
def client(config_path: Path, store_url: str) -> Iterator[TestClient]:
    """The daemon on `store_url` (SQLite or PostgreSQL), not signed in yet."""
    environ = {} if store_url.startswith("sqlite") else {"RUNYARD_DATABASE_URL": store_url}
    runyard = Runyard(load_config(config_path, environ=environ), environ=environ)
    with TestClient(create_app(runyard), follow_redirects=False) as client:
        sign_in(client, runyard)
        yield client


def sign_in(client: TestClient, runyard: Runyard) -> None:
    form = client.get("/login")
    login_token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert login_token is not None
    answer = client.post(
        "/login",
        data={"token": runyard.token, "login_token": login_token.group(1), "next": "/"},
    )
    assert answer.status_code == 303, answer.text


def register(runyard: Runyard, name: str, config_hash: str) -> None:
    NodeRegistry(
        runyard.store,
        NodeIdentity(
            name=name,
            instance=f"{name}-instance".ljust(26, "0")[:26],
            url=f"http://{name}.lan:9477",
            lease_seconds=15.0,
            config_hash=config_hash,
            version="test",
        ),
    ).register()


def row_of(html: str, name: str) -> str:
    found = re.search(rf'<tr data-node="{name}"[^>]*>(.*?)</tr>', html, re.S)
    assert found is not None, f"no row for node {name}"
    return found.group(0)


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.mark.parametrize(
    "store_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_the_daemon_page_lists_the_nodes_and_flags_the_one_with_another_config(
    client: TestClient, make_run: Callable[..., Run]
) -> None:
    runyard: Runyard = client.app.state.runyard  # type: ignore[attr-defined]
    # bravo runs a different config and has two runs running; charlie shares
    # alpha's config, and its lease ran out an hour ago.
    register(runyard, "bravo", "ffffffffffffffff")
    register(runyard, "charlie", runyard.config_hash)
    with runyard.store.transaction(write=True) as connection:
        connection.execute(
            sa.update(nodes_table)
            .where(nodes_table.c.name == "charlie")
            .values(lease_renewed_at=sa.func.now() - timedelta(hours=1))
        )
    now = datetime.now(UTC)
    runyard.store.apply(
        [
            make_run(task_name="hello", status=RunStatus.RUNNING, node="bravo", start_at=now)
            for _ in range(2)
        ],
        [],
    )

    html = client.get("/daemon").text
    section = re.search(r'<section aria-labelledby="cluster-heading".*?</section>', html, re.S)
    assert section is not None
    cluster = section.group(0)
    assert "3 nodes share this database; this page comes from alpha" in text_of(cluster)
    assert re.findall(r'<tr data-node="([^"]+)"', cluster) == ["alpha", "bravo", "charlie"]

    mismatch = re.search(
        r'<div class="banner warn" role="alert" id="config-mismatch">.*?</div>', cluster, re.S
    )
    assert mismatch is not None
    assert text_of(mismatch.group(0)).startswith(
        "Config mismatch: bravo runs a different config from the other nodes"
    )

    alpha = row_of(cluster, "alpha")
    assert "(this node)" in alpha
    assert "data-mismatch" not in alpha
    assert 'href="http://alpha.lan:9477/daemon"' in alpha
    assert re.search(r"live</span> renewed \d+\.\d s ago", alpha)
    assert "(lease 15 s)" in alpha
    assert runyard.config_hash in alpha
    assert re.search(r"<td data-running>0</td>", alpha)

    bravo = row_of(cluster, "bravo")
    assert "data-mismatch" in bravo
    assert "ffffffffffffffff" in bravo and "differs" in bravo
    assert re.search(r"<td data-running>2</td>", bravo)
    assert "(this node)" not in bravo

    charlie = row_of(cluster, "charlie")
    assert "data-mismatch" not in charlie and "differs" not in charlie
    assert '<span class="badge bad">expired</span> renewed 1 h ago' in charlie


@pytest.mark.parametrize(
    "store_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_nodes_with_one_config_show_no_mismatch(client: TestClient) -> None:
    runyard: Runyard = client.app.state.runyard  # type: ignore[attr-defined]
    register(runyard, "bravo", runyard.config_hash)
    html = client.get("/daemon").text
    assert re.findall(r'<tr data-node="([^"]+)"', html) == ["alpha", "bravo"]
    assert "config-mismatch" not in html
    assert "differs" not in html


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_on_sqlite_the_daemon_page_has_no_cluster_section(client: TestClient) -> None:
    html = client.get("/daemon").text
    assert "<h1>Daemon</h1>" in html
    assert "cluster-heading" not in html
    assert "data-node" not in html
