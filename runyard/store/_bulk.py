"""The writer's batches into SQLite straight through the driver: new runs, run changes.

Under a burst of triggers the writer thread commits a batch every few
milliseconds while the event loop answers requests. Through SQLAlchemy a
batch takes the interpreter lock back many times (BEGIN, the statement and
each row it returns, COMMIT), and each time it waits for the busy event loop
to let go. One multi-row INSERT in autocommit mode is one call into SQLite and
is atomic by itself: the batch goes in whole or not at all.

Run starts and ends (`write_runs`) are the same story at a steady rate: two
updates per run. Through SQLAlchemy's executemany a batch of a few updates
cost the writer thread ~0.4 ms of Python per commit, all of it holding the
interpreter lock the event loop needs; through the driver it is a few calls
(BEGIN IMMEDIATE, one executemany, COMMIT) that release the lock while
SQLite works.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from runyard.domain.models import RunStatus
from runyard.store._rows import MUTABLE_COLUMNS
from runyard.store.schema import UtcDateTime, runs, sqlite_timestamp

_COLUMNS = tuple(column.name for column in runs.c)
_TIMESTAMPS = frozenset(column.name for column in runs.c if isinstance(column.type, UtcDateTime))
_MUTABLE_TIMESTAMPS = tuple(
    index for index, column in enumerate(MUTABLE_COLUMNS) if column in _TIMESTAMPS
)
_UPDATE = f"UPDATE runs SET {', '.join(f'{column} = ?' for column in MUTABLE_COLUMNS)} WHERE id = ?"
# What a run's start changes: the one update to `running` is a pending run
# starting (engine/runner.py; a service's lifetime is inserted running, see
# engine/recorder.py). SQLite rewrites the entries of every index holding a column
# the SET clause names, changed or not: naming only these three leaves the
# exit code, duration and end reason indexes alone, 10-15 % of the update.
_STARTED_COLUMNS = ("status", "start_at", "description")
_START = f"UPDATE runs SET {', '.join(f'{column} = ?' for column in _STARTED_COLUMNS)} WHERE id = ?"
_RUNNING = RunStatus.RUNNING.value


def insert_runs(connection: sqlite3.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows of `runs` (column -> Python value) atomically.

    `connection` must be in autocommit mode (runyard's SQLite connections
    are). Rows that fit one statement go in as one; more (past SQLite's limit
    on bound values) go in one explicit transaction.
    """
    if not rows:
        return
    limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per_statement = max(1, limit // len(_COLUMNS))
    if len(rows) <= per_statement:
        _insert(connection, rows)
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        for start in range(0, len(rows), per_statement):
            _insert(connection, rows[start : start + per_statement])
    except BaseException:
        connection.rollback()
        raise
    connection.execute("COMMIT")


def _insert(connection: sqlite3.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    values: list[Any] = []
    for row in rows:
        for column in _COLUMNS:
            value = row[column]
            if column in _TIMESTAMPS and value is not None:
                value = sqlite_timestamp(value)
            values.append(value)
    connection.execute(_statement(len(rows)), values)


@functools.lru_cache(maxsize=64)
def _statement(row_count: int) -> str:
    row = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
    return f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES " + ", ".join([row] * row_count)


def write_runs(
    connection: sqlite3.Connection,
    rows: Sequence[Mapping[str, Any]],
    changes: Sequence[tuple[str, Mapping[str, Any]]],
) -> None:
    """Insert `rows` and apply `changes` (run id, its MUTABLE_COLUMNS values) in one transaction.

    A change to a `running` run writes what starting a run changes (status,
    start_at, description); any other writes every mutable column.
    `connection` must be in autocommit mode. An id that is not stored
    changes nothing. On any failure nothing of the batch is stored.
    """
    parameters: list[list[Any]] = []
    starts: list[list[Any]] = []
    for run_id, values in changes:
        if values["status"] == _RUNNING:
            start_at = values["start_at"]
            starts.append(
                [
                    _RUNNING,
                    None if start_at is None else sqlite_timestamp(start_at),
                    values["description"],
                    run_id,
                ]
            )
            continue
        row = [values[column] for column in MUTABLE_COLUMNS]
        for index in _MUTABLE_TIMESTAMPS:
            if row[index] is not None:
                row[index] = sqlite_timestamp(row[index])
        row.append(run_id)
        parameters.append(row)
    limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per_statement = max(1, limit // len(_COLUMNS))
    connection.execute("BEGIN IMMEDIATE")
    try:
        for start in range(0, len(rows), per_statement):
            _insert(connection, rows[start : start + per_statement])
        if starts:
            connection.executemany(_START, starts)
        if parameters:
            connection.executemany(_UPDATE, parameters)
    except BaseException:
        connection.rollback()
        raise
    try:
        connection.execute("COMMIT")
    except BaseException:
        # A COMMIT SQLite refused leaves the transaction open: nothing landed.
        if connection.in_transaction:
            connection.rollback()
        raise
