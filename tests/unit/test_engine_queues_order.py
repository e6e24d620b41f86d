"""Which queued run starts next: the oldest lane head that may start, whatever happened before.

RunQueues keeps the lane heads in a heap; these tests hold it to the rule it
replaced, a walk over every lane, through takes, put-backs, dropped tasks and
lanes that may not start.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

import pytest
from support.fake_time import T0, FakeClock, FakeTimers

from runyard.domain.models import Run, RunStatus, TriggeredBy
from runyard.engine.queues import RunQueues


def queues() -> RunQueues:
    return RunQueues(clock=FakeClock(), on_due=lambda: None, call_later=FakeTimers())


def run(run_id: str, task: str, account: str | None = None, created: int = 0) -> Run:
    return Run(
        id=run_id,
        task_name=task,
        status=RunStatus.PENDING,
        created_at=T0 + timedelta(seconds=created),
        triggered_by=TriggeredBy.API,
        account=account,
    )


def walked(q: RunQueues, may_start: Callable[[str, str | None], bool]) -> str | None:
    """The run the walk over every lane picks (without taking it)."""
    heads = [
        queue[0] for (task, account), queue in q.lanes.items() if queue and may_start(task, account)
    ]
    oldest = min(heads, key=lambda head: (head.created_at, head.id), default=None)
    return None if oldest is None else oldest.id


def test_the_oldest_head_starts_first_across_a_thousand_lanes() -> None:
    q = queues()
    for index in reversed(range(1000)):
        q.enqueue(run(f"r{index:04d}", f"t{index:04d}", created=index))
    started = []
    while (pick := q.next_startable(lambda _task, _account: True)) is not None:
        started.append(pick.id)
    assert started == [f"r{index:04d}" for index in range(1000)]


def test_a_lane_that_may_not_start_is_passed_over_and_kept() -> None:
    q = queues()
    q.enqueue(run("a1", "a", created=1), run("b2", "b", created=2), run("a3", "a", created=3))
    pick = q.next_startable(lambda task, _account: task != "a")
    assert pick is not None and pick.id == "b2"
    assert q.next_startable(lambda task, _account: task != "a") is None
    first = q.next_startable(lambda _task, _account: True)
    second = q.next_startable(lambda _task, _account: True)
    assert [first and first.id, second and second.id] == ["a1", "a3"]


def test_a_head_taken_out_or_put_back_is_followed() -> None:
    q = queues()
    q.enqueue(run("a1", "a", created=1), run("a5", "a", created=5), run("b3", "b", created=3))
    taken = q.take("a1")
    assert taken is not None
    pick = q.next_startable(lambda _task, _account: True)
    assert pick is not None and pick.id == "b3"
    q.put_back(taken)
    pick = q.next_startable(lambda _task, _account: True)
    assert pick is not None and pick.id == "a1"


def test_a_dropped_task_leaves_nothing_behind() -> None:
    q = queues()
    q.enqueue(run("a1", "a", created=1), run("b2", "b", created=2))
    assert [r.id for r in q.drop_task("a")] == ["a1"]
    q.enqueue(run("a3", "a", created=3))
    picks = [q.next_startable(lambda _task, _account: True) for _ in range(3)]
    assert [pick and pick.id for pick in picks] == ["b2", "a3", None]


@pytest.mark.parametrize("seed", range(20))
def test_the_pick_is_the_walks_through_any_sequence_of_changes(seed: int) -> None:
    rng = random.Random(seed)
    q = queues()
    tasks = [f"t{index}" for index in range(6)]
    accounts = [None, "x", "y"]
    taken: list[Run] = []
    for step in range(400):
        action = rng.random()
        blocked = set(rng.sample(tasks, rng.randint(0, 4)))

        def may_start(task: str, _account: str | None, blocked: set[str] = blocked) -> bool:
            return task not in blocked

        if action < 0.45:
            q.enqueue(
                run(f"r{step:04d}", rng.choice(tasks), rng.choice(accounts), rng.randint(0, 50))
            )
        elif action < 0.75:
            expected = walked(q, may_start)
            pick = q.next_startable(may_start)
            assert (pick and pick.id) == expected
        elif action < 0.85:
            waiting = [queued.id for queue in q.lanes.values() for queued in queue]
            if waiting:
                took = q.take(rng.choice(waiting))
                assert took is not None
                taken.append(took)
        elif action < 0.95 and taken:
            q.put_back(taken.pop(rng.randrange(len(taken))))
        else:
            q.drop_task(rng.choice(tasks))
    while (expected := walked(q, lambda _task, _account: True)) is not None:
        pick = q.next_startable(lambda _task, _account: True)
        assert pick is not None and pick.id == expected
    assert q.next_startable(lambda _task, _account: True) is None
