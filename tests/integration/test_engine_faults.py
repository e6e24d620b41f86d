"""The engine over a real store (SQLite and PostgreSQL) when the store refuses a write.

A change the database refuses for good fails its own caller only; a run
whose end cannot be stored as it is still ends, and frees its slot.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from runyard.domain.models import EndReason, Run, RunStatus, TaskDefinition, TriggeredBy
from runyard.domain.queries import RunQuery
from runyard.engine import core
from runyard.engine.core import Engine
from runyard.exceptions import StoreError, StoreUnavailable
from runyard.store.runs import RunStore

pytestmark = pytest.mark.anyio

LONE_SURROGATE = "\udc80"  # valid in a Python str, refused by every database driver


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SpiedStore(RunStore):
    """The real store, recording the runs of each batch it was asked to apply.

    With `hold` set, the next batch waits for it to be cleared (`held` tells
    when it does): what is submitted meanwhile forms one batch.
    """

    batches: list[list[str]]
    hold: threading.Event | None
    held: threading.Event

    def apply(
        self,
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: dict[str, datetime] | None = None,  # type: ignore[override]
        *,
        replay: bool = False,
    ) -> None:
        self.batches.append([run.id for run in (*inserts, *updates)])
        hold, self.hold = self.hold, None
        if hold is not None:
            self.held.set()
            hold.wait()
        super().apply(inserts, updates, ticks, replay=replay)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SpiedStore]:
    opened = RunStore.open(store_url)
    spied = SpiedStore(opened._engine)  # noqa: SLF001 - the same engine, spied on
    spied.batches, spied.hold, spied.held = [], None, threading.Event()
    yield spied
    opened.close()


async def started(store: RunStore, tmp_path: Path, *tasks: TaskDefinition) -> Engine:
    engine = Engine(
        tasks={t.name: t for t in tasks},
        store=store,
        data_dir=tmp_path,
        max_concurrent_runs=64,
        base_environ={"PATH": os.environ["PATH"]},
        retention_interval=3600,
    )
    await engine.start()
    return engine


async def wait_ended(engine: Engine, run_id: str, timeout: float = 30) -> Run:
    run = await engine.wait_for_end(run_id, timeout)
    assert run is not None, f"run {run_id} did not end within {timeout}s"
    return run


def stored_runs(store: RunStore, task_name: str) -> list[Run]:
    runs, _ = store.list_runs(RunQuery(task_name=task_name, limit=1000))
    return runs


async def test_a_value_the_database_refuses_fails_only_its_own_trigger(
    store: SpiedStore, tmp_path: Path
) -> None:
    engine = await started(
        store,
        tmp_path,
        TaskDefinition(name="job", run='cat "$RUNYARD_INPUT" >/dev/null', max_concurrent=64),
    )
    try:
        good = [[[["cell", str(i)]]] for i in range(40)]
        inputs = [*good[:20], [[[LONE_SURROGATE]]], *good[20:]]
        # The writer is held in a first commit while all 41 are submitted: one batch.
        release = threading.Event()
        store.hold = release
        first = asyncio.ensure_future(engine.trigger("job", {}, TriggeredBy.API, good[0]))
        await asyncio.to_thread(store.held.wait, 10)
        triggers = asyncio.gather(
            *(engine.trigger("job", {}, TriggeredBy.API, data) for data in inputs),
            return_exceptions=True,
        )
        await asyncio.sleep(0.05)
        release.set()
        outcomes = await triggers
        await first
        # The 41 were tried in one transaction (perhaps with the first run's start).
        assert len(store.batches[0]) == 1 and len(store.batches[1]) >= 41, store.batches[:3]
        bad = outcomes.pop(20)
        assert isinstance(bad, StoreError) and not isinstance(bad, StoreUnavailable), bad
        accepted = [runs[0] for runs in outcomes if isinstance(runs, list)]
        assert len(accepted) == 40, [o for o in outcomes if not isinstance(o, list)]
        accepted.append((await first)[0])
        ended = [await wait_ended(engine, run.id) for run in accepted]
        assert {run.end_reason for run in ended} == {EndReason.SUCCESS}
        assert engine.counts("job") == (0, 0)
        assert not engine.is_started(ended[0].id)
        runs = stored_runs(store, "job")
        assert len(runs) == 41
        assert {run.status for run in runs} == {RunStatus.ENDED}
    finally:
        await engine.shutdown(timeout=10)


async def test_nul_on_stderr_does_not_keep_a_run_from_ending(
    store: SpiedStore, tmp_path: Path
) -> None:
    # PostgreSQL text cannot hold NUL: the end's description quotes stderr.
    engine = await started(
        store, tmp_path, TaskDefinition(name="nul", run=r"printf 'bad\000byte\n' >&2; exit 3")
    )
    try:
        [run] = await engine.trigger("nul", {}, TriggeredBy.API)
        ended = await wait_ended(engine, run.id)
        assert (ended.end_reason, ended.exit_code) == (EndReason.FAILED, 3)
        [stored] = stored_runs(store, "nul")
        assert stored.status is RunStatus.ENDED and stored.end_reason is EndReason.FAILED
        assert "bad\ufffdbyte" in stored.description
        assert engine.counts("nul") == (0, 0)
    finally:
        await engine.shutdown(timeout=10)


async def test_an_end_the_database_refuses_is_stored_cleaned_and_frees_the_slot(
    store: SpiedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: set[str] = set()
    real_apply = store.apply

    def apply(
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: dict[str, datetime] | None = None,
        *,
        replay: bool = False,
    ) -> None:
        # Stands for a value no database takes, in the output data of one run.
        if any(run.id in refused and run.output_data for run in updates):
            raise StoreError("database error: a value this database cannot hold")
        real_apply(inserts, updates, ticks, replay=replay)

    monkeypatch.setattr(store, "apply", apply)
    script = 'echo "[[\\"x\\"]]" > "$RUNYARD_OUTPUT_DIR/result.json"'
    engine = await started(store, tmp_path, TaskDefinition(name="one", run=script))
    try:
        [first] = await engine.trigger("one", {}, TriggeredBy.API)
        refused.add(first.id)
        [second] = await engine.trigger("one", {}, TriggeredBy.API)  # queued behind it
        ended = await wait_ended(engine, first.id)
        assert ended.end_reason is EndReason.SUCCESS
        stored = store.get_run(first.id)
        assert stored is not None and stored.status is RunStatus.ENDED
        assert stored.output_data is None
        assert "could not store this run's end as it was" in stored.description
        # The slot was given back: the run queued behind it ran.
        after = await wait_ended(engine, second.id)
        assert after.end_reason is EndReason.SUCCESS and after.output_data == {"result": [["x"]]}
        assert engine.counts("one") == (0, 0)
    finally:
        await engine.shutdown(timeout=10)


async def test_a_run_ends_once_while_its_end_waits_for_the_database(
    store: SpiedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = asyncio.Event()
    real_apply = store.apply

    def apply(
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: dict[str, datetime] | None = None,
        *,
        replay: bool = False,
    ) -> None:
        if down.is_set():
            raise StoreUnavailable("database error: connection refused")
        real_apply(inserts, updates, ticks, replay=replay)

    monkeypatch.setattr(store, "apply", apply)
    monkeypatch.setattr(core, "TRIGGER_WAIT_SECONDS", 0.3)
    engine = await started(
        store,
        tmp_path,
        TaskDefinition(name="quick", run="true", retry_delay=timedelta(0)),
        TaskDefinition(name="waits", run="sleep 0.2"),
    )
    try:
        [run] = await engine.trigger("quick", {}, TriggeredBy.API)
        [queued] = await engine.trigger("quick", {}, TriggeredBy.API)
        down.set()
        # Its process ended: the slot frees at once, the next queued run starts.
        await asyncio.wait_for(_until(lambda: engine.counts("quick") == (0, 0)), 10)
        # A caller's trigger gives up after its wait, and is not recorded later.
        with pytest.raises(StoreUnavailable):
            await engine.trigger("waits", {}, TriggeredBy.API)
        stuck = store.get_run(run.id)
        assert stuck is not None and stuck.status is not RunStatus.ENDED
        down.clear()
        for run_id in (run.id, queued.id):
            assert (await wait_ended(engine, run_id)).end_reason is EndReason.SUCCESS
        assert [r.status for r in stored_runs(store, "quick")] == [RunStatus.ENDED] * 2
        assert stored_runs(store, "waits") == []
        assert engine.counts("quick") == (0, 0)
    finally:
        await engine.shutdown(timeout=10)


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.02)


async def test_a_stop_the_database_cannot_record_leaves_the_run_queued(
    store: SpiedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = asyncio.Event()
    real_apply = store.apply

    def apply(
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: dict[str, datetime] | None = None,
        *,
        replay: bool = False,
    ) -> None:
        if down.is_set():
            raise StoreUnavailable("database error: the database system is shutting down")
        real_apply(inserts, updates, ticks, replay=replay)

    monkeypatch.setattr(store, "apply", apply)
    monkeypatch.setattr(core, "TRIGGER_WAIT_SECONDS", 0.3)
    gate = tmp_path / "gate"
    engine = await started(
        store,
        tmp_path,
        TaskDefinition(name="one", run=f"while [ ! -e {gate} ]; do sleep 0.02; done"),
    )
    try:
        [running] = await engine.trigger("one", {}, TriggeredBy.API)
        [first, second] = [(await engine.trigger("one", {}, TriggeredBy.API))[0] for _ in "ab"]
        await asyncio.wait_for(_until(lambda: engine.is_started(running.id)), 10)
        down.set()
        with pytest.raises(StoreUnavailable):
            await engine.stop(first.id)
        # Not stopped: back in its place, ahead of the run queued after it.
        assert engine.counts("one") == (1, 2)
        down.clear()
        gate.touch()
        ends = [await wait_ended(engine, run.id) for run in (running, first, second)]
        assert [run.end_reason for run in ends] == [EndReason.SUCCESS] * 3
        assert ends[1].start_at is not None and ends[2].start_at is not None
        assert ends[1].start_at <= ends[2].start_at
    finally:
        await engine.shutdown(timeout=10)
