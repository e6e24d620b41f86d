"""Schedulers of several nodes on one real PostgreSQL, driven by one fake clock: each tick once.

Two engines and schedulers (two "nodes") share a database, each with its own
data dir and store connection, as two daemons would; `claim_ticks` is on, as
it is on PostgreSQL. Fired runs are real `true` processes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runyard.domain.models import CatchUp, EndReason, Run, TaskDefinition
from runyard.domain.queries import RunQuery
from runyard.domain.schedule import parse_schedule
from runyard.engine.core import Engine
from runyard.engine.scheduler import Scheduler
from runyard.store.runs import RunStore

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


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


def every_minute(**overrides: object) -> TaskDefinition:
    fields: dict[str, object] = {
        "run": "true",
        "schedule": parse_schedule("* * * * *", "UTC"),
        "max_concurrent": 100,
        "max_queued": 10_000,
    }
    fields.update(overrides)
    return TaskDefinition(name="tick", **fields)  # type: ignore[arg-type]


class Node:
    """One node's engine and scheduler over its own store connection and data dir."""

    def __init__(self, name: str, url: str, data_dir: Path, clock: FakeClock) -> None:
        self.name = name
        self.store = RunStore.open(url)
        self.data_dir = data_dir
        self.clock = clock
        self.engine: Engine | None = None
        self.scheduler: Scheduler | None = None

    async def start(self, task: TaskDefinition) -> Scheduler:
        self.engine = Engine(
            tasks={task.name: task},
            store=self.store,
            data_dir=self.data_dir,
            max_concurrent_runs=64,
            clock=self.clock,
            base_environ={"PATH": os.environ["PATH"]},
            retention_interval=3600,
            node=self.name,
        )
        await self.engine.start()
        self.scheduler = Scheduler(self.engine, self.store, self.clock, claim_ticks=True)
        await self.scheduler.start()
        return self.scheduler

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.engine is not None:
            await self.engine.shutdown(timeout=10)
        self.engine = self.scheduler = None

    def runs(self) -> list[Run]:
        runs, _ = self.store.list_runs(RunQuery(task_name="tick", limit=1000))
        return sorted(runs, key=lambda run: (run.created_at, run.id))


@pytest.fixture
async def nodes(fresh_postgres: str, tmp_path: Path) -> AsyncIterator[list[Node]]:
    clock = FakeClock(T0)
    made = [Node(name, fresh_postgres, tmp_path / name, clock) for name in ("left", "right")]
    yield made
    for node in made:
        await node.stop()
        node.store.close()


async def test_both_nodes_due_at_once_fire_one_run_per_tick(nodes: list[Node]) -> None:
    left, right = nodes
    schedulers = [await node.start(every_minute()) for node in nodes]
    for minute in range(1, 4):
        now = left.clock.advance(minutes=1)
        for scheduler in schedulers[:: 1 if minute % 2 else -1]:  # either may be first
            await scheduler.fire_due(now)
        assert len(left.runs()) == minute
        # The node that lost the claim moved on too: nothing is due again.
        for scheduler in schedulers:
            assert scheduler.next_run_at("tick") == now + timedelta(minutes=1)
    assert {run.node for run in left.runs()} <= {"left", "right"}
    assert [run.end_reason for run in right.runs()] != []
    assert all(run.end_reason is not EndReason.MISSED for run in right.runs())


async def test_missed_ticks_are_recorded_and_caught_up_once(nodes: list[Node]) -> None:
    task = every_minute(catch_up=CatchUp.LATEST)
    for node in nodes:
        await node.start(task)
    for node in nodes:
        await node.stop()
    nodes[0].clock.advance(hours=2, seconds=30)  # the whole cluster was down
    schedulers = [await node.start(task) for node in nodes]
    for scheduler in schedulers:
        await scheduler.fire_due(nodes[0].clock.now)
    runs = nodes[0].runs()
    missed = [run for run in runs if run.end_reason is EndReason.MISSED]
    assert len(missed) == 1
    assert "120 scheduled ticks were missed" in missed[0].description
    assert len([run for run in runs if "Catch-up run" in run.description]) == 1


async def test_a_lagging_node_takes_the_ticks_others_fired_as_fired(nodes: list[Node]) -> None:
    left, right = nodes
    fast = await left.start(every_minute())
    slow = await right.start(every_minute())
    for _ in range(10):
        await fast.fire_due(left.clock.advance(minutes=1))
    # The slow node wakes ten minutes on: its own last tick is old, the stored one is not.
    await slow.fire_due(left.clock.now)
    runs = left.runs()
    assert len(runs) == 10
    assert all(run.end_reason is not EndReason.MISSED for run in runs)
    # One run per tick (the slow node's background loop may have fired one).
    assert len({run.created_at for run in runs}) == 10
