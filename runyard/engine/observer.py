"""What the engine tells an observer (the metrics) as it works.

The engine calls these synchronously, on the event loop or (store_written)
on the writer's thread, so an observer must be quick and must not raise.
"""

from __future__ import annotations

from typing import Protocol

from runyard.domain.models import Run


class EngineObserver(Protocol):
    def run_ended(self, run: Run) -> None:
        """A run reached its end: ran and ended, or ended without running (queue full, missed)."""

    def cron_fired(self, task_name: str, lag_seconds: float) -> None:
        """A cron tick became a run `lag_seconds` after its planned time."""

    def ticks_missed(self, task_name: str, count: int) -> None:
        """`count` cron ticks of a task did not fire (the daemon was down or far behind)."""

    def store_written(self, seconds: float) -> None:
        """One batch of run changes committed in `seconds`."""


class NoObserver:
    """The engine's observer until one is attached: does nothing."""

    def run_ended(self, run: Run) -> None:
        pass

    def cron_fired(self, task_name: str, lag_seconds: float) -> None:
        pass

    def ticks_missed(self, task_name: str, count: int) -> None:
        pass

    def store_written(self, seconds: float) -> None:
        pass
