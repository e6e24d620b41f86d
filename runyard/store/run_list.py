"""The run list's SQL: which runs a RunQuery selects, in what order, and how many.

Filters, the substring search, the sort (with the id as tie-breaker) and
the totals the trigger-kept run_counts give without counting rows. RunStore
runs these statements; the dashboard's reads reuse the filters and sort.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from runyard.domain.models import EndReason, RunStatus, TriggeredBy
from runyard.domain.queries import RunQuery, SortDirection, SortField
from runyard.store._rows import SUMMARY_COLUMNS
from runyard.store.schema import run_counts, runs

SORT_COLUMNS: dict[SortField, sa.Column[Any]] = {
    SortField.TASK_NAME: runs.c.task_name,
    SortField.STATUS: runs.c.status,
    SortField.START_AT: runs.c.start_at,
    SortField.EXIT_CODE: runs.c.exit_code,
    SortField.DURATION: runs.c.duration_ms,
    SortField.CREATED_AT: runs.c.created_at,
}

# A search matches run id, task name, status, end reason, triggered_by and
# external execution id. Only the two free-text columns are matched row by
# row: the enum columns hold a few known values, matched here, and the task
# names are matched in run_counts (a row per task, status and end reason), so
# both become IN lists. A search reads every row when it matches few of them;
# matching two columns instead of six makes that read a third as long.
_SEARCHED_TEXT = (runs.c.id, runs.c.external_execution_id)
_SEARCHED_ENUMS: tuple[tuple[sa.Column[Any], type[StrEnum]], ...] = (
    (runs.c.status, RunStatus),
    (runs.c.end_reason, EndReason),
    (runs.c.triggered_by, TriggeredBy),
)


def list_statements(
    query: RunQuery, dialect: str, *, walk_sort_index: bool = False
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """Return the statements of `RunStore.list_runs` on `dialect`: a page of runs, their total.

    `walk_sort_index` (SQLite): keep the status and end reason filters from
    choosing the index, so the sort key's index is walked (should_walk_sort_index).
    Public so the query plans can be checked (tests, bench/dashboard.py).
    """
    where = run_conditions(query, dialect, walk_sort_index=walk_sort_index)
    page = (
        sa.select(*SUMMARY_COLUMNS)
        .where(*where)
        .order_by(*run_order(query))
        .limit(query.limit)
        .offset(query.offset)
    )
    if query.search:
        return page, sa.select(sa.func.count()).select_from(runs).where(*where)
    return page, counted_total(query)


def run_conditions(
    query: RunQuery, dialect: str, *, walk_sort_index: bool = False
) -> list[ColumnElement[bool]]:
    """Return the conditions selecting the query's runs."""
    conditions: list[ColumnElement[bool]] = []
    if query.task_name is not None:
        conditions.append(runs.c.task_name == query.task_name)
    status: ColumnElement[Any] = runs.c.status
    end_reason: ColumnElement[Any] = runs.c.end_reason
    if walk_sort_index:
        status, end_reason = _not_indexed(status), _not_indexed(end_reason)
    if query.status is not None:
        conditions.append(status == query.status.value)
    if query.end_reason is not None:
        conditions.append(end_reason == query.end_reason.value)
    if query.search:
        conditions.append(_search(query.search, dialect))
    return conditions


def _search(text: str, dialect: str) -> ColumnElement[bool]:
    """Return the condition of a case-insensitive substring search (see _SEARCHED_TEXT)."""
    pattern = "%" + escape_like(text) + "%"

    def contains(column: sa.Column[Any]) -> ColumnElement[bool]:
        # SQLite's LIKE ignores ASCII case, as its lower() folds ASCII only:
        # ilike's lower(column) LIKE lower(pattern) would match the same rows
        # at twice the cost. PostgreSQL's LIKE is case-sensitive.
        if dialect == "sqlite":
            return column.like(pattern, escape="\\")
        return column.ilike(pattern, escape="\\")

    matched: list[ColumnElement[bool]] = [contains(column) for column in _SEARCHED_TEXT]
    tasks = sa.select(run_counts.c.task_name).where(contains(run_counts.c.task_name))
    matched.append(runs.c.task_name.in_(tasks))
    # The enum values are lowercase ASCII: text that is not ASCII matches none.
    folded = text.lower() if text.isascii() else None
    for column, values in _SEARCHED_ENUMS:
        hits = [value.value for value in values if folded is not None and folded in value.value]
        if hits:
            matched.append(column.in_(hits))
    return sa.or_(*matched)


def run_order(query: RunQuery) -> list[ColumnElement[Any]]:
    """Return the query's sort: its field, then id, NULLs as the smallest value."""
    column = SORT_COLUMNS[query.sort_field]
    if query.sort_direction is SortDirection.ASC:
        key = column.asc()
        if column.nullable:
            # PostgreSQL's default is the opposite; SQLite's is the same, and
            # the explicit clause keeps the index usable on both.
            key = key.nulls_first()
        return [key, runs.c.id.asc()]
    key = column.desc()
    if column.nullable:
        key = key.nulls_last()
    return [key, runs.c.id.desc()]


def _not_indexed(column: ColumnElement[Any]) -> ColumnElement[Any]:
    # SQLite's unary + changes no value but keeps the term from choosing an index.
    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


# Sort keys that runs which never started (pending, or ended before a process
# existed) all lack: such runs sit at one end of the key's index.
_UNSTARTED_NULLS = frozenset({SortField.START_AT, SortField.DURATION})
_NEVER_STARTED = frozenset({EndReason.SKIPPED, EndReason.QUEUE_FULL, EndReason.MISSED})


def should_walk_sort_index(connection: Connection, query: RunQuery, total: int) -> bool:
    """Tell whether walking the sort key's index reads fewer runs than sorting the filtered ones.

    A status or end reason filter with a sort key other than created_at (or
    status, for a status filter) has no index of its own: either the filter's
    index gives every matching run to be sorted (all 860,000 successes of a
    million runs), or the sort key's index is walked in order, skipping runs
    that do not match, until the page is full. PostgreSQL chooses between the
    two from its statistics; SQLite has none (runyard never runs ANALYZE) and
    always takes the filter's index. run_counts says how many runs match
    (`total`) and how many the walk passes over, so the walk reads about
    (offset + limit) * all / total runs where the sort reads `total`. Runs
    that never started have no start or duration and sit together at one end
    of those indexes: a walk could pass every other run first.
    """
    if query.status is None and query.end_reason is None:
        return False
    if query.sort_field is SortField.CREATED_AT:
        return False  # (status|end_reason, created_at, id), also per task
    if query.sort_field is SortField.STATUS and query.end_reason is None:
        return False  # (status, id), (task_name, status, id)
    if total == 0:
        return False
    if query.sort_field in _UNSTARTED_NULLS and (
        query.status is RunStatus.PENDING or query.end_reason in _NEVER_STARTED
    ):
        return False
    walked = int(
        connection.execute(counted_total(RunQuery(task_name=query.task_name))).scalar_one()
    )
    return (query.offset + query.limit) * walked < total * total


def counted_total(query: RunQuery) -> sa.Select[tuple[int]]:
    """Return the total of a query without search, from the trigger-kept counters."""
    statement = sa.select(sa.func.coalesce(sa.func.sum(run_counts.c.count), 0))
    if query.task_name is not None:
        statement = statement.where(run_counts.c.task_name == query.task_name)
    if query.status is not None:
        statement = statement.where(run_counts.c.status == query.status.value)
    if query.end_reason is not None:
        statement = statement.where(run_counts.c.end_reason == query.end_reason.value)
    return statement


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
