"""A burst of new runs into SQLite as one statement, straight through the driver.

Under a burst of triggers the writer thread commits a batch every few
milliseconds while the event loop answers requests. Through SQLAlchemy a
batch takes the interpreter lock back many times (BEGIN, the statement and
each row it returns, COMMIT), and each time it waits for the busy event loop
to let go. One multi-row INSERT in autocommit mode is one call into SQLite and
is atomic by itself: the batch goes in whole or not at all.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from runyard.store.schema import UtcDateTime, runs, sqlite_timestamp

_COLUMNS = tuple(column.name for column in runs.c)
_TIMESTAMPS = frozenset(column.name for column in runs.c if isinstance(column.type, UtcDateTime))


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
