"""A burst of new runs into SQLite as one statement: whole or not at all, on a real file."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runyard.domain.models import EndReason, Run, RunStatus, TriggeredBy
from runyard.exceptions import StoreError
from runyard.store import RunStore
from runyard.store._bulk import insert_runs
from runyard.store._rows import run_to_row

MakeRun = Callable[..., Run]
COLUMNS = 23  # the columns of `runs`


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "runyard.db"
    RunStore.open(f"sqlite:///{path}").close()  # migrated, then left alone
    yield path


@pytest.fixture
def connection(database: Path) -> Iterator[sqlite3.Connection]:
    # Autocommit, like the daemon's connections.
    connection = sqlite3.connect(database, isolation_level=None)
    yield connection
    connection.close()


def stored_ids(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM runs ORDER BY id")]


def many(make_run: MakeRun, count: int) -> list[Run]:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    return [make_run(created_at=start + timedelta(seconds=n)) for n in range(count)]


def test_a_batch_past_one_statement_goes_in_whole(
    database: Path, connection: sqlite3.Connection, make_run: MakeRun
) -> None:
    # Room for 4 rows per statement: 10 rows take 3 statements in one transaction.
    connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 4 * COLUMNS + 1)
    runs = many(make_run, 10)
    insert_runs(connection, [run_to_row(run) for run in runs])
    assert stored_ids(database) == sorted(run.id for run in runs)
    assert not connection.in_transaction


@pytest.mark.parametrize("rows_per_statement", [4, 100])
def test_a_failing_row_leaves_none_of_its_batch(
    database: Path, connection: sqlite3.Connection, make_run: MakeRun, rows_per_statement: int
) -> None:
    connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, rows_per_statement * COLUMNS)
    first = many(make_run, 1)
    insert_runs(connection, [run_to_row(run) for run in first])
    # The last row repeats a stored id: it fails in the batch's last statement.
    batch = many(make_run, 9) + first
    with pytest.raises(sqlite3.IntegrityError):
        insert_runs(connection, [run_to_row(run) for run in batch])
    assert stored_ids(database) == [first[0].id]
    assert not connection.in_transaction


def test_the_store_reads_back_what_a_burst_wrote(database: Path, make_run: MakeRun) -> None:
    store = RunStore.open(f"sqlite:///{database}")
    try:
        runs = [
            make_run(
                triggered_by=TriggeredBy.CLOUD,
                params={"n": n},
                input_data=[[["a", "é"], [str(n), ""]]],
                account="team",
                secret_hash="ab" * 32,
                description=f"line one\nline {n}",
            )
            for n in range(50)
        ]
        store.apply(runs, [])
        assert [store.get_run(run.id) for run in runs] == runs
    finally:
        store.close()


def test_a_naive_time_is_a_store_error_and_writes_nothing(
    database: Path, make_run: MakeRun
) -> None:
    store = RunStore.open(f"sqlite:///{database}")
    try:
        good = make_run()
        naive = make_run(status=RunStatus.PENDING, created_at=datetime(2025, 1, 1))
        with pytest.raises(StoreError, match="naive datetime"):
            store.apply([good, naive], [])
        assert stored_ids(database) == []
    finally:
        store.close()


def test_starts_ends_and_new_runs_go_in_as_one_transaction(
    database: Path, make_run: MakeRun
) -> None:
    store = RunStore.open(f"sqlite:///{database}")
    try:
        first, second = many(make_run, 2)
        pending = [dataclasses.replace(run, status=RunStatus.PENDING) for run in (first, second)]
        store.apply(pending, [])
        started_at = datetime(2025, 3, 2, tzinfo=UTC)
        started = dataclasses.replace(
            pending[0], status=RunStatus.RUNNING, start_at=started_at, description="started"
        )
        finished = dataclasses.replace(
            pending[1],
            status=RunStatus.ENDED,
            end_reason=EndReason.FAILED,
            exit_code=3,
            start_at=started_at,
            end_at=started_at + timedelta(seconds=2),
            description="ended",
            output_data={"t": [["a"]]},
        )
        retry = make_run(status=RunStatus.PENDING, retry_of_run_id=second.id)
        store.apply([retry], [started, finished])
        assert store.get_run(started.id) == started
        assert store.get_run(finished.id) == finished
        assert store.get_run(retry.id) == retry
    finally:
        store.close()


def test_a_batch_whose_insert_fails_changes_no_run(database: Path, make_run: MakeRun) -> None:
    store = RunStore.open(f"sqlite:///{database}")
    try:
        (stored,) = many(make_run, 1)
        stored = dataclasses.replace(stored, status=RunStatus.PENDING)
        store.apply([stored], [])
        started = dataclasses.replace(
            stored, status=RunStatus.RUNNING, start_at=datetime(2025, 3, 2, tzinfo=UTC)
        )
        # The insert repeats a stored id: the update in the same batch must not land.
        with pytest.raises(StoreError):
            store.apply([stored], [started])
        assert store.get_run(stored.id) == stored
        # Nothing of it was left open on the pooled connection: the next batch lands.
        store.apply([], [started])
        assert store.get_run(stored.id) == started
    finally:
        store.close()
