"""The wall clock: the one place runyard reads the time of day.

Everything that stamps or compares times takes a `Clock` from its caller
(the composition root passes `utc_now`; tests pass a fixed or stepped clock),
so no other module reads `datetime.now` itself. Durations and deadlines inside
one process use `time.monotonic`, which no wall-clock jump moves.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


__all__ = ["Clock", "utc_now"]
