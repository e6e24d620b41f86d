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

from runyard.domain.models import Run, RunStatus
from runyard.store import RunStore
from runyard.store.claims import Claim, StartLimits
from runyard.store.nodes import NodeIdentity, NodeRegistry
from runyard.store.notices import parse

pytestmark = pytest.mark.postgres

MakeRun = Callable[..., Run]
T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
LIMITS = StartLimits({"backup": 2, "report": 10}, {"acme": 1})


@pytest.fixture
def stores(postgres_database: str) -> Iterator[tuple[RunStore, RunStore]]:
    engine = sa.create_engine(postgres_database)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()
    made = []
    for name in ("left", "right"):
        store = RunStore.open(postgres_database)
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
