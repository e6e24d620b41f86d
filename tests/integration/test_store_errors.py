"""Driver errors become runyard's: permanent (StoreError) or transient (StoreUnavailable)."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from runyard.domain.models import Run
from runyard.exceptions import DiskFull, StoreError, StoreUnavailable
from runyard.store import RunStore
from runyard.store import database as database_module


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_value_no_database_holds_is_a_permanent_error(
    store: RunStore, make_run: Callable[..., Run]
) -> None:
    bad = make_run(input_data=[[["\udc80"]]])
    with pytest.raises(StoreError) as raised:
        store.apply([bad], [])
    assert not isinstance(raised.value, StoreUnavailable)
    assert "surrogates not allowed" in str(raised.value)


def test_a_duplicate_insert_is_permanent_and_a_replay_skips_it(
    store: RunStore, make_run: Callable[..., Run]
) -> None:
    run = make_run()
    store.apply([run], [])
    with pytest.raises(StoreError) as raised:
        store.apply([run], [])
    assert not isinstance(raised.value, StoreUnavailable)
    # A replay of a batch whose commit may have landed: the stored run is kept as it is.
    other = make_run()
    store.apply([run, other], [], replay=True)
    assert store.get_run(other.id) is not None


@pytest.mark.postgres
def test_nul_in_postgresql_text_is_a_permanent_error(
    postgres_database: str, make_run: Callable[..., Run]
) -> None:
    store = RunStore.open(postgres_database)
    try:
        with pytest.raises(StoreError) as raised:
            store.apply([make_run(description="a\x00b")], [])
        assert not isinstance(raised.value, StoreUnavailable)
        assert "NUL" in str(raised.value)
    finally:
        store.close()


def test_a_postgresql_server_that_does_not_answer_is_unavailable() -> None:
    # A port nothing listens on: connection refused, as while the server restarts.
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    store = RunStore(database_module.create_engine(url))
    try:
        with pytest.raises(StoreUnavailable) as raised:
            store.ping()
        assert "connection" in str(raised.value).lower()
    finally:
        store.close()


def test_sqlite_locked_by_another_writer_is_unavailable(
    tmp_path: Path, make_run: Callable[..., Run]
) -> None:
    path = tmp_path / "runyard.db"
    store = RunStore.open(f"sqlite:///{path}")
    lock = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable) as raised:
            store.apply([make_run()], [])  # waits busy_timeout (5 s) first
        assert not isinstance(raised.value, DiskFull)
        assert "locked" in str(raised.value)
        lock.rollback()
        store.apply([make_run()], [])
    finally:
        lock.close()
        store.close()
