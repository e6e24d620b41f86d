"""Each v3 key's rate limit counted in the PostgreSQL that several nodes share.

One row of `v3_calls` per call allowed in the last window. A call is counted
in one transaction under a transaction-scoped advisory lock on its key, so
two nodes counting the same key take turns and the second one sees the
first one's row: a key never gets more than its limit across the cluster,
however its calls are spread. Every time is the database server's clock,
read once per call after the lock: nodes whose clocks disagree still agree
on what the last minute is.

The answer means what `RollingWindow` (domain/ratelimit.py) answers on a
single node: a refused call is not recorded, and its retry_after is the
seconds until the call `limit` places from the newest leaves the window.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.domain.ratelimit import RATE_WINDOW_SECONDS
from runyard.store.schema import v3_calls

# Rows of keys not called since (older than the window) deleted by one sweep:
# a key's own old rows go at its next call, a sweep takes the rest.
SWEEP_BATCH = 10_000

_CTID: sa.ColumnClause[object] = sa.literal_column("ctid")


@dataclass(frozen=True)
class CallVerdict:
    """Whether a call is allowed; if not, the seconds until one would be (never negative)."""

    allowed: bool
    retry_after: float = 0.0


class SharedRateLimit:
    """Count v3 calls per key in a PostgreSQL database; safe to call from any thread."""

    def __init__(self, transaction: Callable[..., AbstractContextManager[Connection]]) -> None:
        """Use `transaction(write=...)`, the RunStore's, for every call."""
        self._transaction = transaction

    def count_call(
        self,
        key_id: str,
        limit: int,
        *,
        window: float = RATE_WINDOW_SECONDS,
        sweep: bool = False,
    ) -> CallVerdict:
        """Record a call of `key_id` if fewer than `limit` were allowed in the last `window` s.

        `sweep`: also delete, in the same transaction, up to SWEEP_BATCH rows
        of any key that have left the window (a caller does it now and then).
        """
        with self._transaction(write=True) as connection:
            key = sa.func.hashtextextended(sa.literal(f"runyard.rate:{key_id}"), 0)
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
            # clock_timestamp(), not now(): now() is when the transaction began,
            # before it waited for the lock behind the calls that hold it.
            now: datetime = connection.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
            horizon = now - timedelta(seconds=window)
            connection.execute(
                sa.delete(v3_calls).where(v3_calls.c.key_id == key_id, v3_calls.c.at <= horizon)
            )
            # The call `limit` places from the newest: while it is in the
            # window, the key is at its limit (the index, walked backwards).
            freeing: datetime | None = connection.execute(
                sa.select(v3_calls.c.at)
                .where(v3_calls.c.key_id == key_id)
                .order_by(v3_calls.c.at.desc())
                .offset(limit - 1)
                .limit(1)
            ).scalar()
            if freeing is None:
                connection.execute(sa.insert(v3_calls).values(key_id=key_id, at=now))
            if sweep:
                _sweep(connection, horizon)
        if freeing is None:
            return CallVerdict(allowed=True)
        retry_after = (freeing + timedelta(seconds=window) - now).total_seconds()
        return CallVerdict(allowed=False, retry_after=max(retry_after, 0.0))


def _sweep(connection: Connection, horizon: datetime) -> None:
    """Delete up to SWEEP_BATCH rows of any key that left the window before `horizon`.

    SKIP LOCKED: rows another call is deleting now are its own to delete, and
    two nodes sweeping at once neither wait for nor deadlock with each other.
    """
    stale = (
        sa.select(_CTID)
        .select_from(v3_calls)
        .where(v3_calls.c.at <= horizon)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    )
    connection.execute(sa.delete(v3_calls).where(_CTID.in_(stale)))
