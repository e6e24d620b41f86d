"""StoreWriter under failures: a refused change fails alone, transient failures are retried.

The sink here is a fake on purpose: what is under test is the writer's
logic (which caller learns what), driven by failures chosen per run.
tests/integration/test_engine_faults.py and tests/acceptance/test_database_faults.py
cover the same paths against real databases.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from runyard.domain.models import Run, RunStatus, TriggeredBy
from runyard.engine import writer as writer_module
from runyard.engine.writer import StoreWriter
from runyard.exceptions import DiskFull, StoreError, StoreUnavailable

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Attempt:
    inserts: list[str]
    updates: list[str]
    replay: bool


@dataclass
class FakeSink:
    """Records what lands; `refuse` decides, per attempt, whether it fails and how."""

    refuse: Callable[[Attempt], Exception | None] = lambda attempt: None
    # The failure happens after the changes were stored (a commit whose answer was lost).
    fail_after_storing: bool = False
    stored: dict[str, Run] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(
        self,
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: dict[str, datetime] | None = None,
        *,
        replay: bool = False,
    ) -> None:
        attempt = Attempt([r.id for r in inserts], [r.id for r in updates], replay)
        with self.lock:
            self.attempts.append(attempt)
            error = self.refuse(attempt)
            if error is not None and not self.fail_after_storing:
                raise error
            for run in inserts:
                assert replay or run.id not in self.stored, f"{run.id} inserted twice"
                self.stored.setdefault(run.id, run)
            for run in updates:
                if run.id in self.stored:
                    self.stored[run.id] = run
            if error is not None:
                raise error


@pytest.fixture
async def started() -> AsyncIterator[Callable[[FakeSink], StoreWriter]]:
    writers: list[StoreWriter] = []

    def start(sink: FakeSink) -> StoreWriter:
        writer = StoreWriter(sink)
        writer.start()
        writers.append(writer)
        return writer

    yield start
    for writer in writers:
        await writer.close()


def _new(run_id: str, status: RunStatus = RunStatus.PENDING) -> Run:
    return Run(
        id=run_id,
        task_name="t",
        status=status,
        created_at=datetime(2025, 3, 1, tzinfo=UTC),
        triggered_by=TriggeredBy.API,
    )


async def _outcomes(futures: Sequence[asyncio.Future[None]]) -> list[BaseException | None]:
    results = await asyncio.gather(*futures, return_exceptions=True)
    return [result if isinstance(result, BaseException) else None for result in results]


async def test_a_refused_change_fails_alone_and_every_other_caller_gets_its_own_outcome(
    started: Callable[[FakeSink], StoreWriter],
) -> None:
    refused = StoreError("database error: surrogates not allowed")
    sink = FakeSink(refuse=lambda attempt: refused if "bad" in attempt.inserts else None)
    writer = started(sink)
    ids = [f"good-{i:02}" for i in range(40)]
    ids.insert(17, "bad")
    # Submitted without yielding to the loop: they all wait in one batch.
    futures = [writer.submit(inserts=[_new(run_id)], urgent=True) for run_id in ids]
    outcomes = dict(zip(ids, await _outcomes(futures), strict=True))

    assert outcomes.pop("bad") is refused
    assert outcomes == {run_id: None for run_id in ids if run_id != "bad"}
    assert sorted(sink.stored) == sorted(run_id for run_id in ids if run_id != "bad")
    assert len(sink.attempts[0].inserts) == 41, "the batch was one transaction at first"
    # Halving finds the one bad change in about 2 * log2(41) transactions, not 41.
    assert len(sink.attempts) <= 15


async def test_a_split_batch_keeps_the_order_of_changes(
    started: Callable[[FakeSink], StoreWriter],
) -> None:
    refused = StoreError("refused")
    sink = FakeSink(refuse=lambda attempt: refused if "bad" in attempt.inserts else None)
    writer = started(sink)
    first = writer.submit(inserts=[_new("a")])
    bad = writer.submit(inserts=[_new("bad")])
    # "a" started and ended, in two changes queued after its insert.
    running = writer.submit(updates=[_new("a", RunStatus.RUNNING)])
    ended = writer.submit(updates=[_new("a", RunStatus.ENDED)])
    assert await _outcomes([first, bad, running, ended]) == [None, refused, None, None]
    assert sink.stored["a"].status is RunStatus.ENDED


async def test_transient_failures_are_retried_until_the_change_lands(
    started: Callable[[FakeSink], StoreWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "MAX_RETRY_SECONDS", 0.05)
    down = threading.Event()
    down.set()
    sink = FakeSink(
        refuse=lambda attempt: StoreUnavailable("connection refused") if down.is_set() else None
    )
    writer = started(sink)
    start = writer.submit(inserts=[_new("r")])
    await asyncio.sleep(0.1)
    end = writer.submit(updates=[_new("r", RunStatus.ENDED)])
    await asyncio.sleep(0.2)
    assert len(sink.attempts) >= 3, "the writer keeps trying"
    assert not start.done() and not end.done()
    assert isinstance(writer.failing(), StoreUnavailable)
    down.clear()
    assert await _outcomes([start, end]) == [None, None]
    assert sink.stored["r"].status is RunStatus.ENDED
    assert writer.failing() is None


async def test_a_caller_with_a_deadline_is_answered_and_never_recorded_later(
    started: Callable[[FakeSink], StoreWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "MAX_RETRY_SECONDS", 0.05)
    down = threading.Event()
    down.set()
    sink = FakeSink(
        refuse=lambda attempt: StoreUnavailable("server restarting") if down.is_set() else None
    )
    writer = started(sink)
    daemon_own = writer.submit(updates=[_new("ended", RunStatus.ENDED)])
    trigger = writer.submit(inserts=[_new("trigger")], urgent=True, give_up_after=0.2)
    with pytest.raises(StoreUnavailable):
        await trigger
    assert not daemon_own.done()
    # Queued while the database is down, after the trigger gave up: it rides along.
    later = writer.submit(inserts=[_new("later")], urgent=True, give_up_after=30)
    await asyncio.sleep(0.1)
    down.clear()
    assert await _outcomes([daemon_own, later]) == [None, None]
    assert "later" in sink.stored
    assert "trigger" not in sink.stored
    assert all("trigger" not in attempt.inserts for attempt in sink.attempts[-1:])


async def test_a_full_disk_answers_callers_at_once_and_keeps_the_daemons_changes(
    started: Callable[[FakeSink], StoreWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "MAX_RETRY_SECONDS", 0.05)
    full = threading.Event()
    full.set()
    sink = FakeSink(
        refuse=lambda attempt: DiskFull("database or disk is full") if full.is_set() else None
    )
    writer = started(sink)
    daemon_own = writer.submit(inserts=[_new("retry-run")])
    trigger = writer.submit(inserts=[_new("trigger")], urgent=True, give_up_after=3600)
    with pytest.raises(DiskFull):
        await asyncio.wait_for(trigger, 5)
    full.clear()
    await daemon_own
    assert set(sink.stored) == {"retry-run"}


async def test_a_commit_that_may_have_landed_is_replayed_not_given_up(
    started: Callable[[FakeSink], StoreWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "MAX_RETRY_SECONDS", 0.05)
    lost_answers = iter([True, True])

    def refuse(attempt: Attempt) -> Exception | None:
        if next(lost_answers, False):
            return StoreUnavailable("connection lost during COMMIT", maybe_committed=True)
        return None

    sink = FakeSink(refuse=refuse, fail_after_storing=True)
    writer = started(sink)
    # Its deadline passes at once: still, answering "not recorded" would be false.
    trigger = writer.submit(inserts=[_new("trigger")], urgent=True, give_up_after=0)
    await asyncio.wait_for(trigger, 5)
    assert set(sink.stored) == {"trigger"}
    assert [attempt.replay for attempt in sink.attempts] == [False, True, True]


async def test_close_gives_up_on_an_unreachable_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_module, "MAX_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(writer_module, "CLOSE_GIVE_UP_SECONDS", 0.3)
    sink = FakeSink(refuse=lambda attempt: StoreUnavailable("connection refused"))
    writer = StoreWriter(sink)
    writer.start()
    pending = writer.submit(updates=[_new("r", RunStatus.ENDED)])
    await asyncio.wait_for(writer.close(), 10)
    with pytest.raises(StoreUnavailable):
        await pending


async def test_a_change_after_close_fails_instead_of_waiting_forever() -> None:
    sink = FakeSink()
    writer = StoreWriter(sink)
    writer.start()
    await writer.write(inserts=[_new("before")])
    await writer.close()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(writer.submit(updates=[_new("before", RunStatus.ENDED)]), 5)
    assert sink.stored["before"].status is RunStatus.PENDING
