"""Retries through the whole engine on a fake clock and a fake timer factory.

The runs are real processes over a real store; only time is faked: the
engine asks the injected factory for each retry's delay timer, and the
test fires it, so a retry_delay of minutes takes no time and its exact
length is checked.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from support.fake_time import T0, FakeClock, FakeTimers

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


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
    timers.made[0].fire()
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
