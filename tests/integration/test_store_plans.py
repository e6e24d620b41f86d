"""SQLite plans for the list queries: index walks that stop after a page, no sorting."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runyard.domain.models import EndReason, Run, RunStatus
from runyard.domain.queries import RunQuery, SortDirection, SortField
from runyard.store import RunStore

MakeRun = Callable[..., Run]

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


PLANNED_QUERIES = [
    RunQuery(task_name=task_name, sort_field=field, sort_direction=direction)
    for task_name in (None, "backup")
    for field in SortField
    for direction in SortDirection
] + [
    RunQuery(status=RunStatus.ENDED),
    RunQuery(end_reason=EndReason.FAILED, sort_direction=SortDirection.ASC),
    RunQuery(task_name="backup", status=RunStatus.RUNNING),
    RunQuery(task_name="backup", end_reason=EndReason.SUCCESS),
    RunQuery(status=RunStatus.ENDED, sort_field=SortField.STATUS),
]


@pytest.fixture
def sqlite_statements(
    tmp_path: Path, make_run: MakeRun
) -> Iterator[tuple[RunStore, Path, list[tuple[str, Any]]]]:
    """Return a SQLite store, its file and the SQL statements it runs from now on."""
    path = tmp_path / "plans.db"
    store = RunStore.open(f"sqlite:///{path}")
    # Without ANALYZE statistics SQLite plans the same for 40 rows as for millions.
    store.apply(
        [
            make_run(
                task,
                RunStatus.ENDED,
                T0 + timedelta(minutes=i),
                end_reason=EndReason.SUCCESS,
                start_at=T0,
                end_at=T0 + timedelta(minutes=i),
            )
            for i in range(20)
            for task in ("backup", "other")
        ],
        [],
    )
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append((statement, parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield store, path, statements
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
        store.close()


@pytest.mark.parametrize("query", PLANNED_QUERIES, ids=repr)
def test_list_is_an_index_walk_on_sqlite(
    sqlite_statements: tuple[RunStore, Path, list[tuple[str, Any]]], query: RunQuery
) -> None:
    store, path, statements = sqlite_statements
    store.list_runs(query)
    pages = [(sql, params) for sql, params in statements if "ORDER BY" in sql]
    assert len(pages) == 1
    assert not any("FROM runs" in sql for sql, _ in statements if "ORDER BY" not in sql)
    sql, params = pages[0]
    with sqlite3.connect(path) as connection:
        plan = " | ".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    connection.close()
    assert "TEMP B-TREE" not in plan
    assert "USING" in plan and "INDEX" in plan, plan
