"""Per-task scheduler state: the last cron tick accounted for, and pausing."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from runyard.exceptions import TickTaken
from runyard.store._upsert import conflict_insert
from runyard.store.schema import task_state


@dataclass(frozen=True)
class TaskState:
    """What the scheduler remembers about one task."""

    task_name: str
    last_tick: datetime | None
    paused: bool


def load_all(connection: Connection) -> dict[str, TaskState]:
    """Return every stored task state by task name."""
    rows = connection.execute(sa.select(task_state).order_by(task_state.c.task_name)).mappings()
    return {row["task_name"]: _row_to_state(row) for row in rows}


def set_paused(connection: Connection, task_name: str, paused: bool, now: datetime) -> TaskState:
    """Pause or resume a task; return its new state.

    Resuming a paused task (or one with no state yet) sets last_tick to now,
    so the ticks that fell in the pause are not missed ones; resuming a task
    that is not paused leaves last_tick alone. last_tick never moves back.
    """
    statement = conflict_insert(connection, task_state).values(
        task_name=task_name,
        last_tick=None if paused else now,
        paused=paused,
        updated_at=now,
    )
    values: dict[str, Any] = {"paused": paused, "updated_at": now}
    if not paused:
        # EXCLUDED.last_tick is now, bound as a UtcDateTime.
        resumed = statement.excluded.last_tick
        values["last_tick"] = sa.case(
            (sa.and_(task_state.c.paused, _before(resumed)), resumed),
            else_=task_state.c.last_tick,
        )
    connection.execute(
        statement.on_conflict_do_update(index_elements=[task_state.c.task_name], set_=values)
    )
    row = (
        connection.execute(sa.select(task_state).where(task_state.c.task_name == task_name))
        .mappings()
        .one()
    )
    return _row_to_state(row)


def set_last_ticks(connection: Connection, ticks: Mapping[str, datetime], now: datetime) -> None:
    """Record each task's tick, unless a later one is stored: last_tick never moves back."""
    if not ticks:
        return
    statement = conflict_insert(connection, task_state)
    statement = statement.on_conflict_do_update(
        index_elements=[task_state.c.task_name],
        set_={"last_tick": statement.excluded.last_tick, "updated_at": now},
        where=_before(statement.excluded.last_tick),
    )
    # Key order: concurrent PostgreSQL transactions then lock rows alike, never deadlock.
    connection.execute(
        statement,
        [
            {"task_name": name, "last_tick": ticks[name], "paused": False, "updated_at": now}
            for name in sorted(ticks)
        ],
    )


def claim_ticks(
    connection: Connection,
    claims: Mapping[str, datetime],
    now: datetime,
    landed: Collection[str] = (),
) -> None:
    """Advance each task's last_tick to its tick, or raise TickTaken if it is not earlier.

    Several nodes fire the same schedule: the one whose conditional UPDATE
    (or first INSERT) changes the row fired the tick; the others learn it
    here, in the transaction that would have inserted the run, which then
    rolls back. The row lock the UPDATE takes makes a second claimant wait
    for the first one's commit and then see its tick. `landed`: tasks whose
    runs an earlier try of this same commit stored (a replay); their claim
    failing is that earlier try's success, not another node's.
    """
    for name in sorted(claims):  # key order: concurrent claims never deadlock
        tick = claims[name]
        bound = sa.literal(tick, task_state.c.last_tick.type)
        # RETURNING, not rowcount: an INSERT ... DO NOTHING reports -1 through psycopg.
        claimed = connection.execute(
            sa.update(task_state)
            .where(task_state.c.task_name == name, _before(bound))
            .values(last_tick=tick, updated_at=now)
            .returning(task_state.c.task_name)
        ).first()
        if claimed is None:
            claimed = connection.execute(
                conflict_insert(connection, task_state)
                .values(task_name=name, last_tick=tick, paused=False, updated_at=now)
                .on_conflict_do_nothing(index_elements=[task_state.c.task_name])
                .returning(task_state.c.task_name)
            ).first()
        if claimed is None and name not in landed:
            raise TickTaken(name, tick.isoformat())


def _before(tick: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """Return: the stored last_tick is NULL or earlier than tick."""
    return sa.or_(task_state.c.last_tick.is_(None), task_state.c.last_tick < tick)


def _row_to_state(row: RowMapping) -> TaskState:
    return TaskState(
        task_name=row["task_name"], last_tick=row["last_tick"], paused=bool(row["paused"])
    )
