"""A fake clock and a fake timer factory, for code that is handed its clock and timers.

The engine takes `clock()` and `timers(delay, callback, *args)` from its
caller (runyard/clock.py, runyard/engine/timers.py); tests hand it these and
move time themselves: set `clock.now`, then fire the timer that is due.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FakeTimer:
    delay: float
    callback: Callable[..., object]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        assert not self.cancelled, "a cancelled timer fired"
        self.callback(*self.args)


@dataclass
class FakeTimers:
    """A timer factory that only records: each timer fires when the test says so."""

    made: list[FakeTimer] = field(default_factory=list)

    def __call__(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(delay, callback, args)
        self.made.append(timer)
        return timer
