"""The scheduler's decisions, driven by a fake clock (no sleeps to wait for ticks).

The store is an in-memory SQLite database; fired runs are real `true` processes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runyard.domain.models import (
    CatchUp,
    EndReason,
    OverlapPolicy,
    Run,
    TaskDefinition,
    TriggeredBy,
)
from runyard.domain.queries import RunQuery
from runyard.domain.schedule import jitter_offset, parse_schedule
from runyard.engine.core import Engine
from runyard.engine.scheduler import Scheduler
from runyard.store.runs import RunStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)  # a Monday, on a whole minute


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def every_minute(name: str = "tick", **overrides: object) -> TaskDefinition:
    fields: dict[str, object] = {
        "run": "true",
        "schedule": parse_schedule("* * * * *", "UTC"),
        "max_concurrent": 100,
        "max_queued": 10_000,
    }
    fields.update(overrides)
    return TaskDefinition(name=name, **fields)  # type: ignore[arg-type]


class Daemon:
    """An engine and a scheduler over one store, started and stopped like the daemon does."""

    def __init__(self, store: RunStore, data_dir: Path, clock: FakeClock) -> None:
        self.store = store
        self.data_dir = data_dir
        self.clock = clock
        self.engine: Engine | None = None
        self.scheduler: Scheduler | None = None

    async def start(self, *tasks: TaskDefinition) -> Scheduler:
        self.engine = Engine(
            tasks={task.name: task for task in tasks},
            store=self.store,
            data_dir=self.data_dir,
            max_concurrent_runs=64,
            clock=self.clock,
            base_environ={"PATH": os.environ["PATH"]},
            retention_interval=3600,
        )
        await self.engine.start()
        self.scheduler = Scheduler(self.engine, self.store, self.clock)
        await self.scheduler.start()
        return self.scheduler

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.engine is not None:
            await self.engine.shutdown(timeout=10)
        self.engine = self.scheduler = None

    def runs(self, task_name: str = "tick") -> list[Run]:
        runs, _ = self.store.list_runs(RunQuery(task_name=task_name, limit=1000))
        return sorted(runs, key=lambda run: (run.created_at, run.id))

    def fired(self, task_name: str = "tick") -> list[Run]:
        return [run for run in self.runs(task_name) if run.end_reason is not EndReason.MISSED]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    store = RunStore.open("sqlite://")
    d = Daemon(store, tmp_path, FakeClock(T0))
    yield d
    await d.stop()
    store.close()


async def test_fires_each_tick_once_and_never_on_a_backward_jump(daemon: Daemon) -> None:
    scheduler = await daemon.start(every_minute())
    assert scheduler.next_run_at("tick") == T0 + timedelta(minutes=1)
    await scheduler.fire_due(daemon.clock.advance(seconds=30))
    assert daemon.fired() == []
    await scheduler.fire_due(daemon.clock.advance(seconds=30))
    await scheduler.fire_due(daemon.clock.now)  # asked twice for the same instant
    assert len(daemon.fired()) == 1
    assert daemon.fired()[0].triggered_by is TriggeredBy.CRON
    # The wall clock steps back ten minutes (NTP), then catches up again.
    await scheduler.fire_due(daemon.clock.advance(minutes=-10))
    await scheduler.fire_due(daemon.clock.advance(minutes=10))
    assert len(daemon.fired()) == 1
    await scheduler.fire_due(daemon.clock.advance(minutes=1))
    assert len(daemon.fired()) == 2
    assert all(run.end_reason is not EndReason.MISSED for run in daemon.runs())


async def test_a_restart_within_the_same_second_does_not_fire_again(daemon: Daemon) -> None:
    scheduler = await daemon.start(every_minute())
    await scheduler.fire_due(daemon.clock.advance(minutes=1))
    assert len(daemon.fired()) == 1
    await daemon.stop()
    daemon.clock.advance(seconds=0.4)
    scheduler = await daemon.start(every_minute())
    await scheduler.fire_due(daemon.clock.now)
    assert len(daemon.fired()) == 1
    assert scheduler.next_run_at("tick") == T0 + timedelta(minutes=2)


@pytest.mark.parametrize(
    ("catch_up", "expected_runs"),
    [(CatchUp.LATEST, 1), (CatchUp.ALL, 100), (CatchUp.SKIP, 0)],
)
async def test_downtime_of_three_days_is_one_missed_record_then_catch_up(
    daemon: Daemon, catch_up: CatchUp, expected_runs: int
) -> None:
    task = every_minute(catch_up=catch_up, max_catch_up_runs=100)
    await daemon.start(task)
    await daemon.stop()
    daemon.clock.advance(days=3, seconds=30)  # back between two ticks
    scheduler = await daemon.start(task)
    await scheduler.fire_due(daemon.clock.now)
    missed = [run for run in daemon.runs() if run.end_reason is EndReason.MISSED]
    assert len(missed) == 1
    assert (missed[0].exit_code, missed[0].status.value) == (-1, "ended")
    assert "4320 scheduled ticks were missed" in missed[0].description
    fired = daemon.fired()
    assert len(fired) == expected_runs
    assert all("Catch-up run" in run.description for run in fired)
    # Nothing more is due until the next minute.
    await scheduler.fire_due(daemon.clock.now)
    assert len(daemon.fired()) == expected_runs


async def test_a_wall_clock_jump_forward_is_handled_like_downtime(daemon: Daemon) -> None:
    scheduler = await daemon.start(every_minute())
    await scheduler.fire_due(daemon.clock.advance(minutes=1))
    await scheduler.fire_due(daemon.clock.advance(hours=1, seconds=30))  # suspend / resume
    reasons = Counter(run.end_reason for run in daemon.runs())
    assert reasons[EndReason.MISSED] == 1
    # one on-time run, one catch-up for the latest missed tick
    assert len(daemon.fired()) == 2


async def test_a_slightly_late_tick_still_fires_on_time(daemon: Daemon) -> None:
    scheduler = await daemon.start(every_minute())
    await scheduler.fire_due(daemon.clock.advance(minutes=1, seconds=2))
    assert len(daemon.fired()) == 1
    assert not [run for run in daemon.runs() if run.end_reason is EndReason.MISSED]


async def test_paused_ticks_are_neither_fired_nor_missed(daemon: Daemon) -> None:
    scheduler = await daemon.start(every_minute())
    await scheduler.set_paused("tick", True)
    assert scheduler.is_paused("tick")
    assert scheduler.next_run_at("tick") is None
    await scheduler.fire_due(daemon.clock.advance(hours=2))
    assert daemon.runs() == []
    # The pause survives a restart.
    await daemon.stop()
    scheduler = await daemon.start(every_minute())
    assert scheduler.is_paused("tick")
    await scheduler.set_paused("tick", False)
    assert scheduler.next_run_at("tick") == T0 + timedelta(hours=2, minutes=1)
    await scheduler.fire_due(daemon.clock.advance(minutes=1))
    assert len(daemon.fired()) == 1
    assert not [run for run in daemon.runs() if run.end_reason is EndReason.MISSED]


async def test_jitter_delays_the_start_within_its_window(daemon: Daemon) -> None:
    task = every_minute(jitter=timedelta(seconds=30))
    offset = jitter_offset("tick", timedelta(seconds=30))
    assert timedelta(0) <= offset < timedelta(seconds=30)
    scheduler = await daemon.start(task)
    assert scheduler.next_run_at("tick") == T0 + timedelta(minutes=1) + offset
    await scheduler.fire_due(T0 + timedelta(minutes=1) + offset - timedelta(microseconds=1))
    assert daemon.fired() == []
    daemon.clock.now = T0 + timedelta(minutes=1) + offset
    await scheduler.fire_due(daemon.clock.now)
    assert len(daemon.fired()) == 1


async def test_run_on_start_fires_once_at_start(daemon: Daemon) -> None:
    task = TaskDefinition(name="boot", run="true", run_on_start=True)
    await daemon.start(task)
    [run] = daemon.runs("boot")
    assert run.triggered_by is TriggeredBy.CRON
    assert "run_on_start" in run.description


async def test_each_tick_goes_through_admission(daemon: Daemon) -> None:
    task = every_minute(run="sleep 30", on_overlap=OverlapPolicy.SKIP, max_concurrent=1)
    scheduler = await daemon.start(task)
    await scheduler.fire_due(daemon.clock.advance(minutes=1))
    await scheduler.fire_due(daemon.clock.advance(minutes=1))
    reasons = [run.end_reason for run in daemon.fired()]
    assert reasons.count(EndReason.SKIPPED) == 1


async def test_reload_keeps_last_ticks_and_starts_new_schedules_now(daemon: Daemon) -> None:
    scheduler = await daemon.start(every_minute())
    assert daemon.engine is not None
    await daemon.engine.replace_tasks({"tick": every_minute(), "new": every_minute("new")})
    await scheduler.tasks_changed()
    assert scheduler.next_run_at("new") == T0 + timedelta(minutes=1)
    await daemon.engine.replace_tasks({"new": every_minute("new")})
    await scheduler.tasks_changed()
    assert scheduler.next_run_at("tick") is None
    await scheduler.fire_due(daemon.clock.advance(minutes=1))
    assert daemon.fired("tick") == []
    assert len(daemon.fired("new")) == 1


class Heard:
    """An engine observer that writes down what it is told."""

    def __init__(self) -> None:
        self.lags: list[tuple[str, float]] = []
        self.missed: list[tuple[str, int]] = []
        self.ended: list[EndReason | None] = []

    def run_ended(self, run: Run) -> None:
        self.ended.append(run.end_reason)

    def cron_fired(self, task_name: str, lag_seconds: float) -> None:
        self.lags.append((task_name, lag_seconds))

    def ticks_missed(self, task_name: str, count: int) -> None:
        self.missed.append((task_name, count))

    def store_written(self, seconds: float) -> None:
        pass


async def test_the_observer_hears_on_time_lag_and_missed_ticks_not_catch_up(
    daemon: Daemon,
) -> None:
    scheduler = await daemon.start(every_minute())
    assert daemon.engine is not None
    heard = Heard()
    daemon.engine.observer = heard
    await scheduler.fire_due(daemon.clock.advance(minutes=1, seconds=2))
    assert heard.lags == [("tick", 2.0)]
    # An hour asleep: 59 ticks missed at once, one catch-up run (lag not
    # reported: it is late by design), then the next on-time tick.
    await scheduler.fire_due(daemon.clock.advance(hours=1, seconds=-2, milliseconds=250))
    assert heard.missed == [("tick", 59)]
    assert EndReason.MISSED in heard.ended
    assert heard.lags == [("tick", 2.0), ("tick", 0.25)]
