"""The node registry (store/nodes.py) and tick claims on a real PostgreSQL: who wins a race."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from runyard.domain.models import Run, RunStatus, TaskDefinition
from runyard.engine.recovery import plan_takeover
from runyard.exceptions import LeaseLost, NodeNameTaken, TickTaken
from runyard.store import RunStore
from runyard.store.nodes import DeadNode, NodeIdentity, NodeRegistry, TakeOverPlan
from runyard.store.schema import nodes as nodes_table

pytestmark = pytest.mark.postgres

MakeRun = Callable[..., Run]
TASKS = {"backup": TaskDefinition(name="backup", run="true", retry_attempts=1)}


@pytest.fixture
def store(fresh_postgres: str) -> Iterator[RunStore]:
    opened = RunStore.open(fresh_postgres)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def cut_off(store: RunStore, postgres_database: str) -> Iterator[RunStore]:
    """A second store on the same database, as a second daemon: it writes under its own lease."""
    other = RunStore.open(postgres_database)
    try:
        yield other
    finally:
        other.close()


def _registry(store: RunStore, name: str, url: str = "", lease: float = 60.0) -> NodeRegistry:
    identity = NodeIdentity(
        name=name,
        instance=f"{name}-instance".ljust(26, "0")[:26],
        url=url or f"http://{name}:9477",
        lease_seconds=lease,
        config_hash="0123456789abcdef",
        version="test",
    )
    registry = NodeRegistry(store, identity)
    registry.register()
    return registry


def _expire(store: RunStore, name: str) -> None:
    with store.transaction(write=True) as connection:
        connection.execute(
            sa.update(nodes_table)
            .where(nodes_table.c.name == name)
            .values(lease_renewed_at=sa.func.now() - timedelta(minutes=5))
        )


def _planner(node: str) -> Callable[[DeadNode, Sequence[Run]], TakeOverPlan]:
    def plan(dead: DeadNode, leftovers: Sequence[Run]) -> TakeOverPlan:
        taken = plan_takeover(leftovers, dead.name, dead.lease_renewed_at, node, TASKS, dead.now)
        return TakeOverPlan(taken.updates, taken.inserts, taken.adopted)

    return plan


def test_two_survivors_racing_take_a_dead_node_over_exactly_once(
    store: RunStore, make_run: MakeRun
) -> None:
    dead = _registry(store, "dead")
    survivors = [_registry(store, "left"), _registry(store, "right")]
    running = [
        make_run(status=RunStatus.RUNNING, node="dead", start_at=datetime.now(UTC))
        for _ in range(5)
    ]
    waiting = make_run(node="dead")
    store.apply([*running, waiting], [])
    _expire(store, dead.name)

    barrier = threading.Barrier(len(survivors) * 4)
    results: list[tuple[str, object]] = []

    def race(registry: NodeRegistry) -> None:
        barrier.wait()
        results.append((registry.name, registry.take_over(_planner(registry.name))))

    threads = [
        threading.Thread(target=race, args=(registry,)) for registry in survivors for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [(name, result) for name, result in results if result is not None]
    assert len(winners) == 1
    winner, _ = winners[0]
    ended = [store.get_run(run.id) for run in running]
    for run in ended:
        assert run is not None
        assert run.status is RunStatus.ENDED
        assert run.end_reason is not None and run.end_reason.value == "crashed"
        assert run.description.count("Node 'dead' stopped renewing its lease") == 1
        assert f"node '{winner}' ended the run." in run.description
        assert run.node == "dead"
    adopted = store.get_run(waiting.id)
    assert adopted is not None and adopted.node == winner
    assert adopted.status is RunStatus.PENDING
    retries = [run for run in store.active_runs() if run.retry_of_run_id]
    assert sorted(run.retry_of_run_id or "" for run in retries) == sorted(r.id for r in running)
    assert {run.node for run in retries} == {winner}
    assert [info.name for info in survivors[0].list_nodes()] == ["left", "right"]


def test_a_live_node_is_not_taken_over(store: RunStore, make_run: MakeRun) -> None:
    _registry(store, "alive")
    taker = _registry(store, "taker")
    run = make_run(status=RunStatus.RUNNING, node="alive", start_at=datetime.now(UTC))
    store.apply([run], [])
    assert taker.take_over(_planner("taker")) is None
    stored = store.get_run(run.id)
    assert stored is not None and stored.status is RunStatus.RUNNING


def test_a_node_finds_only_its_own_runs_and_adopts_unowned_ones(
    store: RunStore, make_run: MakeRun
) -> None:
    mine = _registry(store, "mine")
    _registry(store, "other")
    own = make_run(status=RunStatus.RUNNING, node="mine")
    theirs = make_run(status=RunStatus.RUNNING, node="other")
    unowned = make_run()  # stored before there were nodes
    store.apply([own, theirs, unowned], [])
    assert {run.id for run in mine.own_active_runs()} == {own.id, unowned.id}
    stored = store.get_run(unowned.id)
    assert stored is not None and stored.node == "mine"


def test_a_name_held_by_a_live_node_elsewhere_is_refused(store: RunStore) -> None:
    _registry(store, "node", url="http://one:9477")
    with pytest.raises(NodeNameTaken, match="held by a live node at http://one:9477"):
        _registry(store, "node", url="http://two:9477")
    # The same name and URL is the node restarted: it takes its row back.
    again = _registry(store, "node", url="http://one:9477")
    assert again.renew()


def test_a_node_whose_row_was_taken_over_learns_it_at_renewal(store: RunStore) -> None:
    lost = _registry(store, "lost")
    taker = _registry(store, "taker")
    _expire(store, "lost")
    assert taker.take_over(_planner("taker")) is not None
    assert not lost.renew()


def test_a_write_of_a_node_taken_over_stores_nothing(
    store: RunStore, cut_off: RunStore, make_run: MakeRun
) -> None:
    lost = _registry(cut_off, "lost")
    taker = _registry(store, "taker")
    started = make_run(status=RunStatus.RUNNING, node="lost", start_at=datetime.now(UTC))
    cut_off.apply([started], [])  # its lease is its own: the write lands
    _expire(store, lost.name)
    assert taker.take_over(_planner("taker")) is not None
    # What the cut-off node still had queued (the run's end, its retry)
    # would overwrite the take-over's record: it is refused whole.
    ended = dataclasses.replace(started, status=RunStatus.ENDED, exit_code=0)
    retry = make_run(node="lost", retry_of_run_id=started.id)
    with pytest.raises(LeaseLost, match="node 'lost' lost its lease"):
        cut_off.apply([retry], [ended])
    stored = store.get_run(started.id)
    assert stored is not None and stored.exit_code == -2
    assert "node 'taker' ended the run." in stored.description
    assert store.get_run(retry.id) is None
    # Registered again (a new lease), the node writes again.
    lost.register()
    cut_off.apply([retry], [])
    assert store.get_run(retry.id) is not None


def test_a_write_waits_for_a_take_over_in_progress_then_stores_nothing(
    store: RunStore, cut_off: RunStore, make_run: MakeRun
) -> None:
    lost = _registry(cut_off, "lost")
    taker = _registry(store, "taker")
    _expire(store, lost.name)
    taking = threading.Event()
    release = threading.Event()
    outcome: list[BaseException | None] = []

    def slow_plan(dead: DeadNode, leftovers: Sequence[Run]) -> TakeOverPlan:
        taking.set()  # the dead node's row is locked now
        release.wait(10)
        return _planner("taker")(dead, leftovers)

    def write() -> None:
        taking.wait(10)
        try:
            cut_off.apply([make_run(node="lost")], [])
            outcome.append(None)
        except LeaseLost as error:
            outcome.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    taken = threading.Thread(target=taker.take_over, args=(slow_plan,))
    taken.start()
    taking.wait(10)
    writer.join(0.5)
    assert writer.is_alive()  # the write waits on the row lock the take-over holds
    release.set()
    taken.join(10)
    writer.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLost)
    assert [run.node for run in store.active_runs()] == []


def test_a_tick_is_claimed_once_by_racing_nodes(store: RunStore, make_run: MakeRun) -> None:
    tick = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    barrier = threading.Barrier(6)
    claimed: list[Run] = []
    refused: list[Run] = []

    def fire() -> None:
        run = make_run(task_name="backup")
        barrier.wait()
        try:
            store.apply([run], [], claims={"backup": tick})
            claimed.append(run)
        except TickTaken:
            refused.append(run)

    threads = [threading.Thread(target=fire) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(claimed), len(refused)) == (1, 5)
    assert store.get_run(claimed[0].id) is not None
    assert all(store.get_run(run.id) is None for run in refused)  # rolled back with the claim
    assert store.task_states()["backup"].last_tick == tick
    # The next tick is claimed again; an earlier one never.
    store.apply([], [], claims={"backup": tick + timedelta(seconds=1)})
    with pytest.raises(TickTaken):
        store.apply([], [], claims={"backup": tick})


def test_a_replayed_claim_whose_first_try_landed_is_no_loss(
    store: RunStore, make_run: MakeRun
) -> None:
    tick = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    run = make_run(task_name="backup")
    store.apply([run], [], claims={"backup": tick})
    store.apply([run], [], claims={"backup": tick}, replay=True)  # the answer was lost
    with pytest.raises(TickTaken):
        store.apply([make_run(task_name="backup")], [], claims={"backup": tick}, replay=True)
