"""Retries through the whole engine on a fake clock and a fake timer factory.

The runs are real processes over a real store; only time is faked: the
engine asks the injected factory for each retry's delay timer, and the
test fires it, so a retry_delay of minutes takes no time and its exact
length is checked.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runyard.domain.models import (
    EndReason,
    RetryBackoff,
    Run,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.engine.core import Engine
from runyard.store.runs import RunStore

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

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


@dataclass
class FakeTimers:
    made: list[FakeTimer] = field(default_factory=list)

    def __call__(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(delay, callback, args)
        self.made.append(timer)
        return timer

    def fire(self, timer: FakeTimer) -> None:
        assert not timer.cancelled
        timer.callback(*timer.args)


@dataclass
class Started:
    engine: Engine
    store: RunStore
    clock: FakeClock
    timers: FakeTimers

    async def ended(self, run_id: str) -> Run:
        run = await self.engine.wait_for_end(run_id, 30)
        assert run is not None, f"run {run_id} did not end"
        return run

    def retries_of(self, run_id: str) -> list[Run]:
        return [
            run
            for run in self.store.active_runs()
            if run.retry_of_run_id == run_id and run.status is RunStatus.PENDING
        ]


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Started]:
    store = RunStore.open(f"sqlite:///{tmp_path / 'runyard.db'}")
    clock, timers = FakeClock(), FakeTimers()
    flaky = TaskDefinition(
        name="flaky",
        run="exit 3",
        retry_attempts=2,
        retry_delay=timedelta(minutes=1),
        retry_backoff=RetryBackoff.LINEAR,
    )
    engine = Engine(
        tasks={"flaky": flaky},
        store=store,
        data_dir=tmp_path,
        max_concurrent_runs=4,
        clock=clock,
        base_environ={"PATH": os.environ["PATH"]},
        retention_interval=3600,
        call_later=timers,
    )
    await engine.start()
    yield Started(engine, store, clock, timers)
    await engine.shutdown(timeout=10)
    store.close()


async def test_a_failed_run_is_retried_when_its_delay_timer_fires(started: Started) -> None:
    engine, timers = started.engine, started.timers
    [first] = await engine.trigger("flaky", {}, TriggeredBy.API)
    assert (await started.ended(first.id)).end_reason is EndReason.FAILED

    [retry] = started.retries_of(first.id)
    assert (retry.retry_attempt, retry.not_before) == (1, T0 + timedelta(minutes=1))
    assert [timer.delay for timer in timers.made] == [60.0]
    assert engine.counts("flaky") == (0, 1)

    started.clock.now = T0 + timedelta(minutes=1)
    timers.fire(timers.made[0])
    ended = await started.ended(retry.id)
    assert (ended.end_reason, ended.start_at) == (EndReason.FAILED, T0 + timedelta(minutes=1))

    # The second retry waits twice as long (linear backoff), counted from its creation.
    [second] = started.retries_of(retry.id)
    assert second.not_before == T0 + timedelta(minutes=3)
    assert [timer.delay for timer in timers.made] == [60.0, 120.0]


async def test_a_retry_stopped_during_its_delay_never_starts(started: Started) -> None:
    engine, timers = started.engine, started.timers
    [first] = await engine.trigger("flaky", {}, TriggeredBy.API)
    await started.ended(first.id)
    [retry] = started.retries_of(first.id)

    stopped = await engine.stop(retry.id)
    assert (stopped.end_reason, stopped.start_at) == (EndReason.STOPPED, None)
    assert timers.made[0].cancelled
    assert engine.counts("flaky") == (0, 0)
    assert started.retries_of(first.id) == []
