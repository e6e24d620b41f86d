"""SQLite plans for the list queries: index walks that stop after a page, no sorting."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

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


# A status or end reason filter with a sort key that has no index of its own:
# SQLite walks the sort key's index when the filter matches most runs, and
# sorts the matching runs when they are few (run_list.should_walk_sort_index).
FILTERED_SORTS = [
    RunQuery(end_reason=reason, sort_field=field, sort_direction=direction)
    for reason in (EndReason.SUCCESS, EndReason.CRASHED)
    for field in (SortField.DURATION, SortField.START_AT, SortField.EXIT_CODE, SortField.TASK_NAME)
    for direction in SortDirection
] + [
    RunQuery(status=RunStatus.ENDED, sort_field=SortField.DURATION),
    RunQuery(task_name="backup", end_reason=EndReason.SUCCESS, sort_field=SortField.EXIT_CODE),
]


def _history(make_run: MakeRun) -> list[Run]:
    """300 ended runs of two tasks: 290 successes and 10 crashes."""
    return [
        make_run(
            ("backup", "other")[i % 2],
            RunStatus.ENDED,
            T0 + timedelta(minutes=i),
            end_reason=EndReason.CRASHED if i % 30 == 0 else EndReason.SUCCESS,
            exit_code=-2 if i % 30 == 0 else 0,
            start_at=T0 + timedelta(minutes=i),
            end_at=T0 + timedelta(minutes=i, seconds=i % 7),
        )
        for i in range(300)
    ]


def _sqlite_plan(path: Path, statement: sa.Select[Any]) -> str:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        compiled = statement.compile(
            dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
        )
        values = tuple(compiled.params[name] for name in compiled.positiontup or ())
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.string, values)
            return " | ".join(str(row[-1]) for row in rows)
    finally:
        engine.dispose()


@pytest.mark.parametrize("query", FILTERED_SORTS, ids=repr)
def test_filtered_sort_reads_the_cheaper_index_on_sqlite(
    tmp_path: Path, make_run: MakeRun, query: RunQuery
) -> None:
    path = tmp_path / "plans.db"
    store = RunStore.open(f"sqlite:///{path}")
    try:
        store.apply(_history(make_run), [])
        page, _ = store.list_statements(query)
        plan = _sqlite_plan(path, page)
    finally:
        store.close()
    common = query.end_reason is not EndReason.CRASHED
    if common:
        # 50 rows of the walk's first 52 match: sorting 290 would read them all.
        assert "TEMP B-TREE" not in plan, plan
        assert "end_reason" not in plan and "INDEX ix_runs_" in plan, plan
    else:
        # 10 crashes: reading them by their index and sorting beats a walk past 290.
        assert "ix_runs_end_reason_created" in plan or "end_reason=?" in plan, plan
    assert "USING INDEX" in plan, plan  # never a scan of the table itself


def test_short_search_matches_two_columns_row_by_row_on_sqlite(tmp_path: Path) -> None:
    store = RunStore.open(f"sqlite:///{tmp_path / 'plans.db'}")
    try:
        # Two characters: no three-character piece for the search index to look up.
        page, total = store.list_statements(RunQuery(search="Fa"))
    finally:
        store.close()
    sql = str(page.compile(dialect=sqlite_dialect(), compile_kwargs={"render_postcompile": True}))
    # SQLite's LIKE already ignores ASCII case; lower() on both sides doubles the work.
    assert "lower(" not in sql
    assert sql.count(" LIKE ") == 3  # id, external id, and the task names in run_counts
    assert "runs.end_reason IN" in sql and "runs.status IN" not in sql


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_list_has_an_ordered_index_on_postgres(store: RunStore, make_run: MakeRun) -> None:
    """Every list query can be answered by an index walk with no sort on PostgreSQL.

    With seq scans and sorts priced out, a plan still holding one means no
    index serves the query; on a million runs that is a read of every row.
    """
    store.apply(_history(make_run), [])
    engine = store._engine
    failures = []
    with engine.connect() as connection, connection.begin():
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        connection.exec_driver_sql("SET LOCAL enable_sort = off")
        connection.exec_driver_sql("SET LOCAL enable_incremental_sort = off")
        connection.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        for query in PLANNED_QUERIES + FILTERED_SORTS:
            page, _ = store.list_statements(query)
            compiled = page.compile(
                dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
            )
            rows = connection.exec_driver_sql("EXPLAIN " + compiled.string, compiled.params)
            plan = " | ".join(row[0] for row in rows)
            if "Seq Scan" in plan or "Sort" in plan or "Index" not in plan:
                failures.append(f"{query!r}: {plan}")
    assert failures == [], "\n".join(failures)
    assert len(PLANNED_QUERIES + FILTERED_SORTS) > 40  # the check above ran on every query
