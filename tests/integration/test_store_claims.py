"""Claiming starts and taking waiting runs (store/claims.py) on a real PostgreSQL, node to node.

Each node is a RunStore of its own on one database, registered in the node
registry, as two daemons are.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from runyard.domain.models import EndReason, Run, RunStatus
from runyard.engine.runs import ended_unrun
from runyard.store import RunStore
from runyard.store.claims import AdmitRun, AdmitTrigger, Claim, StartLimits
from runyard.store.nodes import NodeIdentity, NodeRegistry
from runyard.store.notices import parse
from runyard.store.schema import runs

pytestmark = pytest.mark.postgres

MakeRun = Callable[..., Run]
T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
LIMITS = StartLimits({"backup": 2, "report": 10}, {"acme": 1})


@pytest.fixture
def stores(fresh_postgres: str) -> Iterator[tuple[RunStore, RunStore]]:
    made = []
    for name in ("left", "right"):
        store = RunStore.open(fresh_postgres)
        NodeRegistry(
            store,
            NodeIdentity(name, f"{name}-instance", f"http://{name}", 60.0, "hash", "test"),
        ).register()
        made.append(store)
    try:
        yield made[0], made[1]
    finally:
        for store in made:
            store.close()


def _pending(make_run: MakeRun, node: str, minutes: int, **fields: object) -> Run:
    return make_run(node=node, created_at=T0 + timedelta(minutes=minutes), **fields)


def _starting(run: Run) -> Run:
    return dataclasses.replace(run, status=RunStatus.RUNNING, start_at=datetime.now(UTC))


def _claim(store: RunStore, *runs: Run) -> dict[str, Claim]:
    return store.apply([], [], starts=[_starting(run) for run in runs], start_limits=LIMITS)


def _running(store: RunStore, task: str) -> int:
    return sum(
        run.status is RunStatus.RUNNING and run.task_name == task for run in store.active_runs()
    )


def test_nodes_claiming_at_once_never_pass_a_tasks_limit(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    mine = {
        store: [_pending(make_run, node, minute) for minute in range(10)]
        for store, node in ((left, "left"), (right, "right"))
    }
    left.apply([*mine[left], *mine[right]], [])
    barrier = threading.Barrier(8)
    outcomes: list[Claim] = []

    def race(store: RunStore) -> None:
        barrier.wait()
        for run in mine[store]:
            outcomes.extend(_claim(store, run).values())

    threads = [threading.Thread(target=race, args=(store,)) for store in (left, right) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(Claim.GRANTED) == 2
    assert _running(left, "backup") == 2


def test_a_younger_run_never_takes_the_place_an_older_one_waits_for_elsewhere(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    running = _pending(make_run, "left", 0)
    older = _pending(make_run, "left", 1)
    newer = _pending(make_run, "right", 2)
    other_lane = _pending(make_run, "right", 3, account="acme")
    left.apply([running, older, newer, other_lane], [])
    assert _claim(left, running) == {running.id: Claim.GRANTED}
    # backup has one place left (limit 2) and left's older run waits for it:
    # right's younger run of the same lane waits, wherever the older one is.
    assert _claim(right, newer) == {newer.id: Claim.WAIT}
    # Another lane (an account's) of the same task is not held back by it.
    assert _claim(right, other_lane) == {other_lane.id: Claim.GRANTED}
    assert _claim(left, older) == {older.id: Claim.WAIT}  # the limit is full now


def test_a_younger_run_starts_when_there_is_room_for_the_older_ones_too(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    older = _pending(make_run, "left", 1)
    newer = _pending(make_run, "right", 2)
    left.apply([older, newer], [])
    # Two places, one older run waiting on a node that has no slot for it:
    # right's slot does not idle for order's sake.
    assert _claim(right, newer) == {newer.id: Claim.GRANTED}
    assert _claim(left, older) == {older.id: Claim.GRANTED}


def test_an_accounts_limit_holds_across_nodes(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    first = _pending(make_run, "left", 1, task_name="report", account="acme")
    second = _pending(make_run, "right", 2, task_name="report", account="acme")
    left.apply([first, second], [])
    assert _claim(left, first) == {first.id: Claim.GRANTED}
    assert _claim(right, second) == {second.id: Claim.WAIT}
    ended = dataclasses.replace(_starting(first), status=RunStatus.ENDED, end_at=datetime.now(UTC))
    left.apply([], [ended])
    assert _claim(right, second) == {second.id: Claim.GRANTED}


def test_a_run_another_node_took_is_gone_and_a_replayed_claim_is_granted(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    run = _pending(make_run, "left", 1)
    left.apply([run], [])
    taken = right.adopt_pending(5, LIMITS, 0)
    assert [adopted.id for adopted in taken] == [run.id]
    assert taken[0].node == "right"
    assert _claim(left, run) == {run.id: Claim.GONE}
    assert left.end_pending([dataclasses.replace(run, status=RunStatus.ENDED)]) == set()
    starting = _starting(taken[0])
    assert right.apply([], [], starts=[starting], start_limits=LIMITS) == {run.id: Claim.GRANTED}
    # The same claim again, as after a commit whose answer was lost.
    assert right.apply([], [], starts=[starting], start_limits=LIMITS, replay=True) == {
        run.id: Claim.GRANTED
    }


def test_a_node_takes_only_what_has_room_and_what_it_can_run(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    runs = [_pending(make_run, "left", minute) for minute in range(4)]
    in_file = _pending(make_run, "left", 0, task_name="report", input_size=100_000)
    unknown = _pending(make_run, "left", 0, task_name="elsewhere-only")
    left.apply([*runs, in_file, unknown], [])
    # backup allows 2 running: only its 2 oldest are taken, even with room for 5.
    taken = right.adopt_pending(5, LIMITS, 0)
    assert [run.id for run in taken] == [runs[0].id, runs[1].id]
    # Room for one more, and none that fits: nothing taken.
    assert right.adopt_pending(1, StartLimits({"backup": 0}, {}), 0) == []
    # A run must have waited long enough (by the database's clock) to be taken.
    fresh = make_run(node="left", created_at=datetime.now(UTC), task_name="report")
    left.apply([fresh], [])
    assert right.adopt_pending(5, StartLimits({"report": 10}, {}), 3600) == []
    assert [run.id for run in right.adopt_pending(5, StartLimits({"report": 10}, {}), 0)] == [
        fresh.id
    ]


def test_ends_and_starts_notify_the_other_nodes(
    stores: tuple[RunStore, RunStore], make_run: MakeRun, postgres_database: str
) -> None:
    left, _right = stores
    heard: list[set[str] | None] = []
    listening = threading.Event()

    def on_tasks(tasks: set[str] | None) -> None:
        if tasks is None:
            listening.set()
        heard.append(tasks)

    listener = left.listen_for_lanes(on_tasks)
    try:
        assert listening.wait(10)
        run = _pending(make_run, "left", 1)
        left.apply([run], [])
        _claim(left, run)

        def notified() -> bool:
            return {"backup"} in heard

        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while not notified() and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
        assert notified()
    finally:
        listener.close()
    # An empty or unreadable payload means "any task".
    assert parse("") is None and parse("not json") is None
    assert parse('["a", "b"]') == {"a", "b"}


# ----- triggers admitted under the cluster's counts (claims.admit_triggers) --------


def _trigger(
    make_run: MakeRun,
    node: str,
    minute: int,
    *,
    start: bool,
    skip: bool = False,
    kill: bool = False,
    max_queued: int = 3,
    **fields: object,
) -> AdmitTrigger:
    """One trigger of one run, as a node admits it: `start` when the node has a slot for it."""
    run = _pending(make_run, node, minute, **fields)
    now = datetime.now(UTC)
    form = AdmitRun(
        pending=run,
        running=_starting(run) if start else None,
        skipped=ended_unrun(run, EndReason.SKIPPED, "busy", now) if skip else None,
        queue_full=None if kill else ended_unrun(run, EndReason.QUEUE_FULL, "full", now),
    )
    limit = LIMITS.tasks[run.task_name]
    return AdmitTrigger(run.task_name, limit, max_queued, kill, (form,))


def _admit(store: RunStore, trigger: AdmitTrigger, *, replay: bool = False) -> Claim:
    inserts = [run.pending for run in trigger.runs]
    fates = store.apply(inserts, [], start_limits=LIMITS, admissions=[trigger], replay=replay)
    return fates[inserts[0].id]


def _race(stores: tuple[RunStore, RunStore], triggers: list[AdmitTrigger]) -> list[Claim]:
    """Admit `triggers` from 8 threads, alternating between the two nodes."""
    left, right = stores
    barrier = threading.Barrier(8)
    fates: list[Claim] = []
    lock = threading.Lock()

    def race(index: int) -> None:
        store = (left, right)[index % 2]
        barrier.wait()
        for trigger in triggers[index::8]:
            fate = _admit(store, trigger)
            with lock:
                fates.append(fate)

    threads = [threading.Thread(target=race, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return fates


def _statuses(store: RunStore, task: str) -> dict[str, int]:
    with store.transaction() as connection:
        rows = connection.execute(
            sa.select(runs.c.status, runs.c.end_reason, sa.func.count())
            .where(runs.c.task_name == task)
            .group_by(runs.c.status, runs.c.end_reason)
        )
        return {reason or status: count for status, reason, count in rows}


def test_a_tasks_queue_holds_max_queued_runs_across_nodes(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    busy = [_pending(make_run, "left", minute) for minute in range(2)]
    left.apply(busy, [])
    assert set(_claim(left, *busy).values()) == {Claim.GRANTED}  # backup: 2 of 2 running
    nodes = ("left", "right")
    triggers = [
        _trigger(make_run, nodes[index % 2], 10 + index, start=False) for index in range(16)
    ]
    fates = _race(stores, triggers)
    # backup's max_queued is 3: three wait, wherever they were triggered; the rest are refused.
    assert fates.count(Claim.WAIT) == 3
    assert fates.count(Claim.QUEUE_FULL) == 13
    assert _statuses(right, "backup") == {"running": 2, "pending": 3, "queue_full": 13}


def test_runs_a_node_would_start_are_claimed_with_their_insert_and_the_rest_queue_or_refuse(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    nodes = ("left", "right")
    triggers = [
        _trigger(make_run, nodes[index % 2], index, start=True, max_queued=1) for index in range(16)
    ]
    fates = _race(stores, triggers)
    # Every node had a slot for its runs; the task has 2 places and a queue of 1.
    assert fates.count(Claim.GRANTED) == 2
    assert fates.count(Claim.WAIT) == 1
    assert fates.count(Claim.QUEUE_FULL) == 13
    assert _statuses(stores[0], "backup") == {"running": 2, "pending": 1, "queue_full": 13}


def test_a_busy_task_skips_across_nodes_but_a_run_a_full_node_queues_still_waits(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    nodes = ("left", "right")
    triggers = [
        _trigger(make_run, nodes[index % 2], index, start=True, skip=True) for index in range(16)
    ]
    fates = _race(stores, triggers)
    assert fates.count(Claim.GRANTED) == 2
    assert fates.count(Claim.SKIPPED) == 14
    # With a place free, a run its node has no slot for waits (on_overlap is about the task).
    with left.transaction() as connection:
        first = connection.execute(
            sa.select(runs.c.id).where(runs.c.status == RunStatus.RUNNING.value).limit(1)
        ).scalar_one()
    started = next(t.runs[0].running for t in triggers if t.runs[0].pending.id == first)
    assert started is not None
    left.apply([], [dataclasses.replace(started, status=RunStatus.ENDED, end_at=datetime.now(UTC))])
    queued = _trigger(make_run, "right", 30, start=False, skip=True)
    assert _admit(right, queued) is Claim.WAIT


def test_a_kill_trigger_stops_the_oldest_running_run_wherever_it_runs(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    oldest = _pending(make_run, "left", 0)
    younger = _pending(make_run, "right", 1)
    left.apply([oldest, younger], [])
    assert _claim(left, oldest) == {oldest.id: Claim.GRANTED}
    assert _claim(right, younger) == {younger.id: Claim.GRANTED}
    asked: list[str] = []
    listening = threading.Event()

    def on_tasks(tasks: set[str] | None) -> None:
        if tasks is None:
            listening.set()

    listener = left.listen_for_lanes(on_tasks, asked.extend)
    try:
        assert listening.wait(10)
        # Each waiting run has its own run to stop: the oldest, then the next.
        first = _trigger(make_run, "right", 5, start=True, kill=True)
        second = _trigger(make_run, "left", 6, start=False, kill=True)
        assert _admit(right, first) is Claim.WAIT
        assert _admit(left, second) is Claim.WAIT
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while len(asked) < 2 and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
        assert asked == [oldest.id, younger.id]
    finally:
        listener.close()
    # Kill never refuses: the queue holds both, max_queued aside.
    assert _statuses(left, "backup") == {"running": 2, "pending": 2}


def test_a_run_waiting_out_a_retry_delay_is_not_in_the_queue(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    busy = [_pending(make_run, "left", minute) for minute in range(2)]
    later = datetime.now(UTC) + timedelta(hours=1)
    delayed = [_pending(make_run, "left", 5 + minute, not_before=later) for minute in range(3)]
    left.apply([*busy, *delayed], [])
    _claim(left, *busy)
    fates = [_admit(right, _trigger(make_run, "right", 10 + i, start=False)) for i in range(4)]
    assert fates == [Claim.WAIT, Claim.WAIT, Claim.WAIT, Claim.QUEUE_FULL]


def test_a_replayed_admission_answers_what_was_stored(
    stores: tuple[RunStore, RunStore], make_run: MakeRun
) -> None:
    left, right = stores
    granted = _trigger(make_run, "left", 1, start=True)
    assert _admit(left, granted) is Claim.GRANTED
    # The commit's answer was lost: the replay finds the run started, not claimed twice.
    assert _admit(left, granted, replay=True) is Claim.GRANTED
    waiting = _trigger(make_run, "left", 2, start=False, max_queued=0)
    assert _admit(left, waiting) is Claim.QUEUE_FULL
    assert _admit(left, waiting, replay=True) is Claim.QUEUE_FULL
    assert _statuses(right, "backup") == {"running": 1, "queue_full": 1}
