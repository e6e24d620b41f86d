"""A v3 key's rate limit across nodes on one real PostgreSQL (runyard/v3/callers.py).

Two `Callers` on two stores of one database are two nodes; then two whole
services, each with its HTTP app, answer the key's calls in turn. When the
database cannot be reached, a node counts the key's calls in its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.domain.accounts import Account
from runyard.exceptions import V3Error
from runyard.store import RunStore, database
from runyard.store.keys import KeyStore
from runyard.store.rate_limit import SharedRateLimit
from runyard.v3.callers import Caller, Callers
from runyard.v3.messages import RATE_LIMITED

pytestmark = pytest.mark.postgres

LIMIT = 4
ACCOUNT = Account(id="acme", rate_limit_per_minute=LIMIT)
CALLER = Caller(account=ACCOUNT, key_id="01JKEY0000000000000000000A")


@dataclass(frozen=True)
class DaemonSettings:
    host: str = "127.0.0.1"
    port: int = 9477
    external_url: str | None = None
    max_invalid_keys_per_minute: int = 100


@dataclass(frozen=True)
class Settings:
    accounts: Mapping[str, Account] = field(default_factory=lambda: {"acme": ACCOUNT})
    daemon: DaemonSettings = field(default_factory=DaemonSettings)


SETTINGS = Settings()


@pytest.fixture
def stores(fresh_postgres: str) -> Iterator[tuple[RunStore, RunStore]]:
    """Two stores on one database, as two daemons have."""
    first = RunStore.open(fresh_postgres)
    second = RunStore.open(fresh_postgres)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def _callers(store: RunStore, data_dir: Path) -> Callers:
    assert store.shared
    return Callers(
        KeyStore(store.transaction),
        lambda: SETTINGS,
        data_dir,
        now=lambda: datetime.now(UTC),
        shared_limit=SharedRateLimit(store.transaction),
    )


def _answers(nodes: list[Callers], calls: int) -> list[tuple[int, str, float] | None]:
    """Count `calls` calls of CALLER, each on the next node; None: allowed, else the refusal."""

    async def count_all() -> list[tuple[int, str, float] | None]:
        answers: list[tuple[int, str, float] | None] = []
        for index in range(calls):
            try:
                await nodes[index % len(nodes)].count_call(CALLER)
            except V3Error as error:
                assert error.retry_after is not None
                answers.append((error.status, error.message, error.retry_after))
            else:
                answers.append(None)
        return answers

    return asyncio.run(count_all())


def test_two_nodes_refuse_the_call_over_the_key_s_limit(
    stores: tuple[RunStore, RunStore], tmp_path: Path
) -> None:
    nodes = [_callers(store, tmp_path) for store in stores]
    answers = _answers(nodes, LIMIT + 2)
    # Each node saw half the calls: alone, each would have allowed LIMIT.
    assert answers[:LIMIT] == [None] * LIMIT
    for refused in answers[LIMIT:]:
        assert refused is not None
        status, message, retry_after = refused
        assert (status, message) == (429, RATE_LIMITED)
        assert 50 < retry_after <= 60


def test_a_node_counts_in_memory_while_the_database_is_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real PostgreSQL URL on a port nothing listens on: every count fails to connect.
    unreachable = RunStore(database.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/x"))
    try:
        node = _callers(unreachable, tmp_path)
        with caplog.at_level(logging.WARNING, logger="runyard.v3"):
            answers = _answers([node], LIMIT + 1)
    finally:
        unreachable.close()
    assert answers[:LIMIT] == [None] * LIMIT
    refused = answers[LIMIT]
    assert refused is not None
    assert refused[:2] == (429, RATE_LIMITED)
    assert 59 < refused[2] <= 60
    warnings = [record.getMessage() for record in caplog.records if record.name == "runyard.v3"]
    assert len(warnings) == 1, warnings  # once, not at every call
    assert "counted by this node alone" in warnings[0]


CONFIG = """\
[daemon]
data_dir = "{data_dir}"
node_name = "{name}"
shutdown_timeout = "5s"

[tasks.hello]
run = "echo hi"

[accounts.acme]
tasks = ["hello"]
rate_limit_per_minute = {limit}
"""


@pytest.fixture
def two_nodes(fresh_postgres: str, tmp_path: Path) -> Iterator[list[TestClient]]:
    """Two services (nodes alpha and bravo) on one PostgreSQL, each with its HTTP app."""
    environ = {"RUNYARD_DATABASE_URL": fresh_postgres}
    with contextlib.ExitStack() as running:
        clients = []
        for name in ("alpha", "bravo"):
            path = tmp_path / f"{name}.toml"
            path.write_text(
                CONFIG.format(data_dir=tmp_path / name, name=name, limit=LIMIT), encoding="utf-8"
            )
            runyard = Runyard(load_config(path, environ=environ), environ=environ)
            clients.append(running.enter_context(TestClient(create_app(runyard))))
        yield clients


def test_two_daemons_answer_429_past_the_key_s_limit_whichever_is_asked(
    two_nodes: list[TestClient],
) -> None:
    runyard: Runyard = two_nodes[0].app.state.runyard  # type: ignore[attr-defined]
    _key, plaintext = KeyStore(runyard.store.transaction).create("acme", "", datetime.now(UTC))
    answers = [
        two_nodes[index % 2].post("/api/v3/list-automations", json={"key": plaintext})
        for index in range(LIMIT + 2)
    ]
    assert [answer.status_code for answer in answers] == [200] * LIMIT + [429, 429]
    for refused in answers[LIMIT:]:
        assert refused.json() == {"status": "error", "message": RATE_LIMITED}
        assert refused.headers["Retry-After"] in {str(seconds) for seconds in range(50, 61)}
