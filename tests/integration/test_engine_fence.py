"""Fencing (engine/fencing.py) through a real NodeLease, engine, processes and PostgreSQL.

The test makes the node's lease renewals fail (the database stays up for
everything else), so both ways a fence is lifted are seen exactly: the
lease was still the node's own, or another node took it over meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from runyard.domain.models import RunStatus, TaskDefinition, TriggeredBy
from runyard.engine.core import Engine
from runyard.engine.node_lease import NodeLease
from runyard.exceptions import NodeFenced, StoreUnavailable
from runyard.store import RunStore
from runyard.store.nodes import NodeIdentity, NodeRegistry
from runyard.store.schema import nodes as nodes_table

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]

LEASE = 3.0
TASKS = {
    "work": TaskDefinition(
        name="work",
        run="sleep 60",
        max_concurrent=2,
        retry_attempts=1,
        retry_delay=timedelta(0),
    )
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FlakyRegistry(NodeRegistry):
    """A registry whose renewals fail while `broken` is set (the rest of the store works)."""

    broken = False

    def renew(self) -> bool:
        if self.broken:
            raise StoreUnavailable("renewal refused by the test")
        return super().renew()


class Node:
    def __init__(self, store: RunStore, name: str, data_dir: Path) -> None:
        identity = NodeIdentity(
            name=name,
            instance=uuid.uuid4().hex[:26],
            url=f"http://{name}:9477",
            lease_seconds=LEASE,
            config_hash="0123456789abcdef",
            version="test",
        )
        self.registry = FlakyRegistry(store, identity)
        self.engine = Engine(
            tasks=TASKS,
            store=store,
            data_dir=data_dir,
            max_concurrent_runs=8,
            base_environ={"PATH": os.environ["PATH"]},
            retention_interval=3600,
            node=name,
            own_runs=self.registry.own_active_runs,
        )
        self.lease = NodeLease(self.registry, self.engine)

    async def start(self) -> None:
        await self.lease.register()
        await self.engine.start()
        self.lease.start()

    async def stop(self) -> None:
        await self.lease.stop()
        await self.engine.shutdown(timeout=10)


@pytest.fixture
async def node(fresh_postgres: str, tmp_path: Path) -> AsyncIterator[tuple[Node, RunStore]]:
    store = RunStore.open(fresh_postgres)
    made = Node(store, "solo", tmp_path / "solo")
    await made.start()
    try:
        yield made, store
    finally:
        await made.stop()
        store.close()


async def _until(check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _pids(engine: Engine) -> list[int]:
    return [
        active.child.pid
        for active in engine._runner.active.values()  # noqa: SLF001 - what is running here
        if active.child is not None
    ]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_node_that_cannot_renew_kills_its_runs_then_records_them_once_renewed(
    node: tuple[Node, RunStore],
) -> None:
    solo, store = node
    runs = [
        (await solo.engine.trigger("work", {}, TriggeredBy.API))[0] for _ in range(3)
    ]  # two run, one waits (max_concurrent = 2)
    await _until(lambda: len(_pids(solo.engine)) == 2)
    pids = _pids(solo.engine)

    solo.registry.broken = True
    fenced_at = time.monotonic()
    await _until(lambda: solo.engine.fencing.fenced, timeout=LEASE)
    # Two missed renewals: fenced with a third of the lease left.
    assert time.monotonic() - fenced_at < LEASE * 2 / 3 + 0.5
    await _until(lambda: not any(_alive(pid) for pid in pids), timeout=2)
    with pytest.raises(NodeFenced, match="node 'solo' cannot renew its lease"):
        await solo.engine.trigger("work", {}, TriggeredBy.API)
    # Nothing starts while fenced, not even the run that waited.
    await asyncio.sleep(0.5)
    assert solo.engine.running_here() == 0

    solo.registry.broken = False
    await _until(lambda: not solo.engine.fencing.fenced, timeout=LEASE)
    first, second, waited = (store.get_run(run.id) for run in runs)
    for killed in (first, second):
        assert killed is not None and killed.status is RunStatus.ENDED
        assert killed.end_reason is not None and killed.end_reason.value == "crashed"
        assert "Node 'solo' could not renew its lease (no lease renewal for" in killed.description
        assert killed.description.count("Crashed") == 1
    retries = [run for run in store.active_runs() if run.retry_of_run_id]
    assert sorted(run.retry_of_run_id or "" for run in retries) == sorted(
        run.id for run in runs[:2]
    )
    # The queue is back, oldest first: the run that waited starts here now.
    assert waited is not None
    await _until(lambda: solo.engine.is_started(waited.id))
    assert (await solo.engine.trigger("work", {}, TriggeredBy.API))[0].node == "solo"


async def test_a_node_taken_over_while_fenced_drops_its_runs_and_registers_again(
    node: tuple[Node, RunStore], postgres_database: str, tmp_path: Path
) -> None:
    solo, store = node
    runs = [(await solo.engine.trigger("work", {}, TriggeredBy.API))[0] for _ in range(2)]
    await _until(lambda: len(_pids(solo.engine)) == 2)
    solo.registry.broken = True
    await _until(lambda: solo.engine.fencing.fenced, timeout=LEASE)
    # Another node finds the lease expired and takes solo over.
    with store.transaction(write=True) as connection:
        connection.execute(
            sa.update(nodes_table)
            .where(nodes_table.c.name == "solo")
            .values(lease_renewed_at=sa.func.now() - timedelta(minutes=5))
        )
    other_store = RunStore.open(postgres_database)
    other = Node(other_store, "other", tmp_path / "other")
    try:
        await other.lease.register()
        await other.engine.start()
        other.lease._renewing_since = time.monotonic() - 2 * LEASE  # noqa: SLF001 - no grace
        assert await other.lease.renew_and_sweep() == ["solo"]
        solo.registry.broken = False
        await _until(lambda: not solo.engine.fencing.fenced, timeout=LEASE)
        for run in runs:
            stored = store.get_run(run.id)
            assert stored is not None and stored.exit_code == -2
            assert "node 'other' ended the run." in stored.description
            assert "could not renew" not in stored.description  # solo wrote nothing over it
        retries = [run for run in store.active_runs() if run.retry_of_run_id]
        assert {run.node for run in retries} == {"other"}
        assert len(retries) == 2
        assert solo.engine.running_here() == 0
        assert [info.name for info in solo.registry.list_nodes()] == ["other", "solo"]
        assert solo.registry.renew()
    finally:
        await other.engine.shutdown(timeout=10)
        other_store.close()
