"""StoreWriter against a fake sink: when a change counts as durable, and how batches form.

tests/integration/test_writer_faults.py covers the failure paths; here the
database always takes what it is given. The sink can hold a commit open,
so what happens while one transaction is in flight is seen exactly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from runyard.domain.models import Run, RunStatus, TriggeredBy
from runyard.engine.writer import StoreWriter
from runyard.exceptions import LeaseLost, StoreUnavailable, TickTaken
from runyard.store.claims import AdmitRun, AdmitTrigger, Claim, StartLimits

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Commit:
    inserts: list[tuple[str, RunStatus]]
    updates: list[tuple[str, RunStatus]]
    ticks: dict[str, datetime] | None


@dataclass
class HoldingSink:
    """Records each transaction; while `held` is set, a commit waits until it is cleared."""

    commits: list[Commit] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)

    def apply(
        self,
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: dict[str, datetime] | None = None,
        *,
        replay: bool = False,
    ) -> None:
        self.entered.set()
        if self.held.is_set():
            assert self.released.wait(10), "the test never released the commit"
        self.commits.append(
            Commit(
                [(run.id, run.status) for run in inserts],
                [(run.id, run.status) for run in updates],
                dict(ticks) if ticks else None,
            )
        )

    def hold(self) -> None:
        self.held.set()
        self.released.clear()
        self.entered.clear()

    def release(self) -> None:
        self.held.clear()
        self.released.set()


@dataclass
class Started:
    writer: StoreWriter
    sink: HoldingSink
    commit_times: list[float]


@pytest.fixture
async def started() -> AsyncIterator[Started]:
    sink = HoldingSink()
    times: list[float] = []
    writer = StoreWriter(sink, on_commit=times.append)
    writer.start()
    yield Started(writer, sink, times)
    sink.release()
    await writer.close()


def run(run_id: str, status: RunStatus = RunStatus.PENDING) -> Run:
    return Run(id=run_id, task_name="t", status=status, created_at=T0, triggered_by=TriggeredBy.API)


async def in_flight(sink: HoldingSink) -> None:
    """Wait until the writer thread is inside a held commit."""
    assert await asyncio.to_thread(sink.entered.wait, 10)


async def test_a_write_is_answered_only_once_its_transaction_committed(started: Started) -> None:
    started.sink.hold()
    future = started.writer.submit(inserts=[run("a")], urgent=True)
    await in_flight(started.sink)
    await asyncio.sleep(0.05)  # the loop runs on; the change is not durable yet
    assert not future.done()
    assert started.sink.commits == []
    started.sink.release()
    await asyncio.wait_for(future, 10)
    assert [commit.inserts for commit in started.sink.commits] == [[("a", RunStatus.PENDING)]]
    assert len(started.commit_times) == 1


async def test_what_arrives_during_a_commit_forms_the_next_transaction_merged(
    started: Started,
) -> None:
    writer, sink = started.writer, started.sink
    sink.hold()
    first = writer.submit(inserts=[run("a")], urgent=True)
    await in_flight(sink)
    # While "a" commits: "b" is inserted and then starts and ends, "a" starts,
    # and two cron ticks of one task arrive out of order.
    later = [
        writer.submit(inserts=[run("b")], ticks={"t": T0 + timedelta(minutes=1)}),
        writer.submit(updates=[run("b", RunStatus.RUNNING)]),
        writer.submit(updates=[run("a", RunStatus.RUNNING)], ticks={"t": T0}),
        writer.submit(updates=[run("b", RunStatus.ENDED)]),
    ]
    sink.release()
    await asyncio.wait_for(asyncio.gather(first, *later), 10)

    assert sink.commits == [
        Commit([("a", RunStatus.PENDING)], [], None),
        Commit(
            [("b", RunStatus.ENDED)],
            [("a", RunStatus.RUNNING)],
            {"t": T0 + timedelta(minutes=1)},
        ),
    ]
    assert len(started.commit_times) == 2


async def test_close_commits_everything_queued_then_refuses_new_changes() -> None:
    sink = HoldingSink()
    writer = StoreWriter(sink)
    writer.start()
    sink.hold()
    first = writer.submit(inserts=[run("a")], urgent=True)
    await in_flight(sink)
    queued = writer.submit(updates=[run("a", RunStatus.ENDED)])
    closing = asyncio.ensure_future(writer.close())
    await asyncio.sleep(0.05)
    assert not closing.done(), "close waits for the commit in flight and what is queued"
    sink.release()
    await asyncio.wait_for(closing, 10)
    assert first.done() and queued.done()
    assert queued.exception() is None
    assert sink.commits[-1].updates == [("a", RunStatus.ENDED)]
    late = writer.submit(inserts=[run("late")])
    with pytest.raises(StoreUnavailable):
        await late
    assert all(("late", RunStatus.PENDING) not in commit.inserts for commit in sink.commits)


async def test_a_write_without_failures_leaves_nothing_failing(started: Started) -> None:
    await asyncio.wait_for(started.writer.write(inserts=[run("a")], urgent=True), 10)
    assert started.writer.failing() is None
    assert started.writer.failure is None


@dataclass
class ClaimingSink:
    """Takes claims of ticks not in `taken`; a batch holding a taken one fails whole."""

    taken: set[str]
    commits: list[tuple[list[str], dict[str, datetime] | None]] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)

    def apply(
        self,
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: dict[str, datetime] | None = None,
        *,
        replay: bool = False,
        claims: dict[str, datetime] | None = None,
        starts: Sequence[Run] = (),
        start_limits: StartLimits | None = None,
        admissions: Sequence[AdmitTrigger] = (),
    ) -> dict[str, Claim]:
        self.entered.set()
        assert self.held.wait(10), "the test never let the commit go"
        for task_name, tick in (claims or {}).items():
            if task_name in self.taken:
                raise TickTaken(task_name, tick.isoformat())
        self.commits.append(([run.id for run in inserts], dict(claims) if claims else None))
        # Starts: granted unless their id is taken, as a run another node started.
        fates = {
            start.id: Claim.GONE if start.id in self.taken else Claim.GRANTED for start in starts
        }
        # A trigger's runs: those with a slot start, the others find the queue full.
        for trigger in admissions:
            for admitted in trigger.runs:
                fate = Claim.GRANTED if admitted.running is not None else Claim.QUEUE_FULL
                fates[admitted.pending.id] = fate
        return fates


async def test_a_taken_tick_fails_only_the_change_that_claimed_it() -> None:
    sink = ClaimingSink(taken={"x"})
    writer = StoreWriter(sink)
    writer.start()
    try:
        first = writer.submit(inserts=[run("first")], urgent=True)
        await asyncio.to_thread(sink.entered.wait, 10)
        # Queued while "first" commits: one batch of three changes.
        lost = writer.submit(inserts=[run("x-run")], claims={"x": T0})
        plain = writer.submit(inserts=[run("b")])
        won = writer.submit(inserts=[run("y-run")], claims={"y": T0})
        sink.held.set()
        await asyncio.wait_for(asyncio.gather(first, plain, won), 10)
        with pytest.raises(TickTaken):
            await asyncio.wait_for(lost, 10)
    finally:
        await writer.close()
    stored = [run_id for inserts, _ in sink.commits for run_id in inserts]
    assert sorted(stored) == ["b", "first", "y-run"]
    assert {"y": T0} in [claims for _, claims in sink.commits]


@dataclass
class FencedSink(HoldingSink):
    """Refuses every commit with LeaseLost while `lost` is set (another node took the lease)."""

    lost: bool = False
    tries: int = 0

    def apply(
        self,
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: dict[str, datetime] | None = None,
        *,
        replay: bool = False,
    ) -> None:
        self.tries += 1
        if self.lost:
            raise LeaseLost("node 'n' lost its lease")
        super().apply(inserts, updates, ticks, replay=replay)


async def test_a_lost_lease_drops_the_whole_batch_at_once_never_in_halves() -> None:
    sink = FencedSink()
    writer = StoreWriter(sink)
    writer.start()
    try:
        sink.hold()
        first = writer.submit(inserts=[run("first")], urgent=True)
        await in_flight(sink)
        # Queued while "first" commits: one batch of three changes, refused whole.
        queued = [
            writer.submit(updates=[run(f"run-{index}", RunStatus.ENDED)]) for index in range(3)
        ]
        sink.lost = True
        sink.release()
        await asyncio.wait_for(first, 10)
        for change in queued:
            with pytest.raises(LeaseLost):
                await asyncio.wait_for(change, 10)
        assert sink.tries == 2  # one try for the batch: no retry, no split
        assert writer.failing() is None
        sink.lost = False
        await asyncio.wait_for(writer.write(inserts=[run("after")]), 10)
    finally:
        await writer.close()
    assert [
        inserts for inserts, _, _ in ((c.inserts, c.updates, c.ticks) for c in sink.commits)
    ] == [
        [("first", RunStatus.PENDING)],
        [("after", RunStatus.PENDING)],
    ]


async def test_a_run_claimed_twice_in_one_batch_starts_once() -> None:
    sink = ClaimingSink(taken={"gone"})
    writer = StoreWriter(sink)
    writer.start()
    try:
        first = writer.submit(inserts=[run("first")], urgent=True)
        await asyncio.to_thread(sink.entered.wait, 10)
        # Queued while "first" commits: one batch, where one run is claimed twice.
        limits = StartLimits({"t": 5}, {})
        once = writer.submit(starts=[run("a", RunStatus.RUNNING)], start_limits=limits)
        twice = writer.submit(
            starts=[run("a", RunStatus.RUNNING), run("b", RunStatus.RUNNING)], start_limits=limits
        )
        gone = writer.submit(starts=[run("gone", RunStatus.RUNNING)], start_limits=limits)
        sink.held.set()
        await asyncio.wait_for(first, 10)
        assert await asyncio.wait_for(once, 10) == {"a": Claim.GRANTED}
        assert await asyncio.wait_for(twice, 10) == {"a": Claim.GONE, "b": Claim.GRANTED}
        assert await asyncio.wait_for(gone, 10) == {"gone": Claim.GONE}
    finally:
        await writer.close()


async def test_each_trigger_admitted_in_a_batch_hears_its_own_runs_fates() -> None:
    sink = ClaimingSink(taken=set())
    writer = StoreWriter(sink)
    writer.start()
    limits = StartLimits({"t": 5}, {})

    def admission(*runs: AdmitRun) -> AdmitTrigger:
        return AdmitTrigger("t", 5, 1, False, runs)

    try:
        first = writer.submit(inserts=[run("first")], urgent=True)
        await asyncio.to_thread(sink.entered.wait, 10)
        # Queued while "first" commits: two triggers and a claim in one batch.
        starting = AdmitRun(run("s"), running=run("s", RunStatus.RUNNING))
        waiting = AdmitRun(run("w"))
        one = asyncio.ensure_future(writer.admit([run("s")], admission(starting), limits))
        two = asyncio.ensure_future(writer.admit([run("w")], admission(waiting), limits))
        claim = writer.submit(starts=[run("c", RunStatus.RUNNING)], start_limits=limits)
        await asyncio.sleep(0.05)
        sink.held.set()
        await asyncio.wait_for(first, 10)
        assert await asyncio.wait_for(one, 10) == {"s": Claim.GRANTED}
        assert await asyncio.wait_for(two, 10) == {"w": Claim.QUEUE_FULL}
        assert await asyncio.wait_for(claim, 10) == {"c": Claim.GRANTED}
    finally:
        await writer.close()
    assert [inserts for inserts, _ in sink.commits] == [["first"], ["s", "w"]]
