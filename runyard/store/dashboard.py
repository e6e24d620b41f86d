"""The dashboard's read queries: each one page's worth of rows, each served by an index.

Written for a history of a million runs: every query is bounded by a LIMIT or
by an indexed range, and totals come from `run_counts` (kept by triggers) or
from counts over an indexed (end_reason, created_at) range, never a full scan.
Each function takes the RunStore and runs one short read transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from runyard.domain.models import EndReason, Run, RunStatus, TriggeredBy
from runyard.domain.queries import RunQuery
from runyard.store._rows import SUMMARY_COLUMNS, row_to_run
from runyard.store.run_list import run_conditions, run_order
from runyard.store.runs import RunStore
from runyard.store.schema import api_keys, run_counts, runs


def status_counts(store: RunStore) -> dict[str, int]:
    """Return how many runs are in each phase (pending, running, ended), from run_counts."""
    statement = sa.select(run_counts.c.status, sa.func.sum(run_counts.c.count)).group_by(
        run_counts.c.status
    )
    with store._transaction() as connection:
        found = {status: int(count or 0) for status, count in connection.execute(statement)}
    return {status.value: found.get(status.value, 0) for status in RunStatus}


def end_reason_counts_since(
    store: RunStore, reasons: Iterable[EndReason], since: datetime
) -> dict[str, int]:
    """Return, per end reason, how many runs created at or after `since` ended that way.

    One count per reason over ix_runs_end_reason_created (end_reason, created_at):
    a range of the index, as long as the window holds runs.
    """
    counts: dict[str, int] = {}
    with store._transaction() as connection:
        for reason in reasons:
            statement = (
                sa.select(sa.func.count())
                .select_from(runs)
                .where(runs.c.end_reason == reason.value, runs.c.created_at >= since)
            )
            counts[reason.value] = int(connection.execute(statement).scalar_one())
    return counts


# What the overview's strips and the task chart show of a run: its outcome
# and times. Reading params and data tables too, and parsing them, took longer
# than the reads themselves (1,000 runs for 50 tasks: 79 ms against 15 ms).
_OUTCOME_COLUMNS = (
    runs.c.id,
    runs.c.task_name,
    runs.c.status,
    runs.c.end_reason,
    runs.c.exit_code,
    runs.c.created_at,
    runs.c.start_at,
    runs.c.end_at,
    runs.c.triggered_by,
    runs.c.replica_index,
    runs.c.retry_attempt,
)
# Tasks per statement: SQLite allows 500 terms in a compound SELECT.
_TASKS_PER_STATEMENT = 200


def recent_runs_of_tasks(
    store: RunStore, task_names: Sequence[str], per_task: int
) -> dict[str, list[Run]]:
    """Return the newest `per_task` runs of each task, newest first (ix_runs_task_created).

    The runs carry their outcome and times only: params, description and
    data are left empty. One statement per 200 tasks: a UNION ALL of one
    indexed LIMIT per task, so a round trip is not paid per task.
    """
    found: dict[str, list[Run]] = {name: [] for name in task_names}
    with store._transaction() as connection:
        for start in range(0, len(task_names), _TASKS_PER_STATEMENT):
            parts = [
                sa.select(*_OUTCOME_COLUMNS)
                .where(runs.c.task_name == name)
                .order_by(runs.c.created_at.desc(), runs.c.id.desc())
                .limit(per_task)
                .subquery()
                .select()
                for name in task_names[start : start + _TASKS_PER_STATEMENT]
            ]
            statement = parts[0] if len(parts) == 1 else sa.union_all(*parts)
            for row in connection.execute(statement).mappings():
                found[row["task_name"]].append(_outcome_run(row))
    for recent in found.values():
        # A UNION ALL keeps no order by itself.
        recent.sort(key=lambda run: (run.created_at, run.id), reverse=True)
    return found


def _outcome_run(row: RowMapping) -> Run:
    reason = row["end_reason"]
    return Run(
        id=row["id"],
        task_name=row["task_name"],
        status=RunStatus(row["status"]),
        created_at=row["created_at"],
        triggered_by=TriggeredBy(row["triggered_by"]),
        exit_code=row["exit_code"],
        end_reason=None if reason is None else EndReason(reason),
        start_at=row["start_at"],
        end_at=row["end_at"],
        replica_index=row["replica_index"],
        retry_attempt=row["retry_attempt"],
    )


def recent_runs(store: RunStore, limit: int) -> list[Run]:
    """Return the newest `limit` runs of every task, newest first (ix_runs_created)."""
    statement = (
        sa.select(*SUMMARY_COLUMNS)
        .order_by(runs.c.created_at.desc(), runs.c.id.desc())
        .limit(limit)
    )
    with store._transaction() as connection:
        return [row_to_run(row) for row in connection.execute(statement).mappings()]


def runs_by_ids(store: RunStore, run_ids: Sequence[str]) -> list[Run]:
    """Return the runs with these ids (primary key lookups), in no particular order."""
    if not run_ids:
        return []
    statement = sa.select(*SUMMARY_COLUMNS).where(runs.c.id.in_(list(run_ids)))
    with store._transaction() as connection:
        return [row_to_run(row) for row in connection.execute(statement).mappings()]


def retries_of(store: RunStore, run_id: str, limit: int = 20) -> list[Run]:
    """Return the runs that retried `run_id`, oldest first (partial index ix_runs_retry_of)."""
    statement = (
        sa.select(*SUMMARY_COLUMNS)
        .where(runs.c.retry_of_run_id == run_id)
        .order_by(runs.c.created_at, runs.c.id)
        .limit(limit)
    )
    with store._transaction() as connection:
        return [row_to_run(row) for row in connection.execute(statement).mappings()]


def active_count_of_account(store: RunStore, account: str) -> dict[str, int]:
    """Return how many runs of a v3 account are pending and running (ix_runs_account_status)."""
    statement = (
        sa.select(runs.c.status, sa.func.count())
        .where(
            runs.c.account == account,
            runs.c.status.in_((RunStatus.PENDING.value, RunStatus.RUNNING.value)),
        )
        .group_by(runs.c.status)
    )
    with store._transaction() as connection:
        found = {status: int(count) for status, count in connection.execute(statement)}
    return {
        RunStatus.PENDING.value: found.get(RunStatus.PENDING.value, 0),
        RunStatus.RUNNING.value: found.get(RunStatus.RUNNING.value, 0),
    }


def key_last_used(store: RunStore) -> dict[str, datetime]:
    """Return when each API key last opened the v3 API, by key id (keys never used are left out)."""
    statement = sa.select(api_keys.c.id, api_keys.c.last_used_at).where(
        api_keys.c.last_used_at.is_not(None)
    )
    with store._transaction() as connection:
        return {key_id: used for key_id, used in connection.execute(statement)}


def filtered_runs(
    store: RunStore,
    query: RunQuery,
    *,
    triggered_by: str | None,
    created_from: datetime | None,
    created_before: datetime | None,
    count_cap: int,
) -> tuple[list[Run], int, bool]:
    """Return one page of runs matching `query` and the dashboard's extra filters.

    The extras (how a run was triggered, a creation-time range) have no
    counter in run_counts, so the total is counted for real but only up to
    `count_cap`: the answer is (page, total, capped), capped meaning "at
    least `total`". A creation range with the default sort walks
    ix_runs_created (or ix_runs_task_created) over that range only.
    """
    where = run_conditions(query, store._engine.dialect.name)
    if triggered_by is not None:
        where.append(runs.c.triggered_by == triggered_by)
    if created_from is not None:
        where.append(runs.c.created_at >= created_from)
    if created_before is not None:
        where.append(runs.c.created_at < created_before)
    page = (
        sa.select(*SUMMARY_COLUMNS)
        .where(*where)
        .order_by(*run_order(query))
        .limit(query.limit)
        .offset(query.offset)
    )
    bounded = sa.select(sa.literal(1)).select_from(runs).where(*where).limit(count_cap + 1)
    counted = sa.select(sa.func.count()).select_from(bounded.subquery())
    with store._transaction() as connection:
        rows = connection.execute(page).mappings().all()
        total = int(connection.execute(counted).scalar_one())
    return [row_to_run(row) for row in rows], min(total, count_cap), total > count_cap
