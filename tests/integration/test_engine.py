"""The engine with real processes and a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from runyard.domain.models import (
    EndReason,
    LogOnFull,
    OverlapPolicy,
    ParamPassing,
    ParamSpec,
    Run,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.domain.queries import RunQuery
from runyard.engine import executor
from runyard.engine.core import Engine
from runyard.engine.process import ChildProcess
from runyard.exceptions import InvalidInput, NotFound, RunAlreadyEnded
from runyard.store.logs import read_lines
from runyard.store.runs import RunStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def task(name: str, run: str, **overrides: object) -> TaskDefinition:
    overrides.setdefault("graceful_stop", timedelta(seconds=2))
    return TaskDefinition(name=name, run=run, **overrides)  # type: ignore[arg-type]


class Harness:
    """An engine over a SQLite file; `restart` reopens everything like a new daemon."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.store = RunStore.open(self.url)
        self.engine: Engine | None = None

    async def start(self, *tasks: TaskDefinition, max_concurrent_runs: int = 4) -> Engine:
        self.engine = Engine(
            tasks={t.name: t for t in tasks},
            store=self.store,
            data_dir=self.tmp_path,
            max_concurrent_runs=max_concurrent_runs,
            base_environ={"PATH": os.environ["PATH"]},
            retention_interval=3600,
        )
        await self.engine.start()
        return self.engine

    async def wait(self, run_id: str, timeout: float = 30) -> Run:
        assert self.engine is not None
        run = await self.engine.wait_for_end(run_id, timeout)
        assert run is not None, f"run {run_id} did not end within {timeout}s"
        return run

    def log_text(self, run_id: str) -> list[str]:
        assert self.engine is not None
        return [line.text for line in read_lines(self.engine.log_path(run_id), 0, 100_000)]

    def runs(self, task_name: str | None = None) -> list[Run]:
        runs, _ = self.store.list_runs(RunQuery(task_name=task_name, limit=1000))
        return runs


@pytest.fixture
async def harness(tmp_path: Path, store_url: str) -> AsyncIterator[Harness]:
    # store_url (conftest.py) runs every engine test on SQLite and on PostgreSQL.
    h = Harness(tmp_path, store_url)
    yield h
    if h.engine is not None:
        await h.engine.shutdown(timeout=10)
    h.store.close()


async def until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state to tell.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_success_records_everything(harness: Harness) -> None:
    engine = await harness.start(
        task("hello", 'echo "hello $WHO"; echo warn >&2', params=(ParamSpec("who", default="x"),))
    )
    [run] = await engine.trigger("hello", {"who": "you"}, TriggeredBy.API)
    assert run.status is RunStatus.PENDING
    ended = await harness.wait(run.id)
    assert ended.end_reason is EndReason.SUCCESS
    assert ended.exit_code == 0
    assert ended.start_at is not None and ended.end_at is not None
    assert ended.start_at <= ended.end_at
    assert ended.params == {"who": "you"}
    assert "hello you" in harness.log_text(run.id)
    assert "warn" in harness.log_text(run.id)
    stored = harness.store.get_run(run.id)
    assert stored is not None and stored.end_reason is EndReason.SUCCESS
    assert "Succeeded" in stored.description


async def test_failure_exit_code_and_stderr_tail(harness: Harness) -> None:
    engine = await harness.start(task("fail", "echo boom >&2; exit 3"))
    [run] = await engine.trigger("fail", {}, TriggeredBy.API)
    ended = await harness.wait(run.id)
    assert (ended.end_reason, ended.exit_code) == (EndReason.FAILED, 3)
    assert "exit code 3" in ended.description and "boom" in ended.description


async def test_success_exit_codes(harness: Harness) -> None:
    engine = await harness.start(task("two", "exit 2", success_exit_codes=(0, 2)))
    [run] = await engine.trigger("two", {}, TriggeredBy.API)
    assert (await harness.wait(run.id)).end_reason is EndReason.SUCCESS


async def test_command_that_does_not_exist(harness: Harness) -> None:
    engine = await harness.start(task("missing", "definitely-not-a-command-runyard"))
    [run] = await engine.trigger("missing", {}, TriggeredBy.API)
    ended = await harness.wait(run.id)
    assert (ended.end_reason, ended.exit_code) == (EndReason.FAILED, 127)
    assert any("not found" in line for line in harness.log_text(run.id))


async def test_shell_that_does_not_exist_is_start_failed(harness: Harness) -> None:
    engine = await harness.start(task("noshell", "true", shell="/nonexistent/shell"))
    [run] = await engine.trigger("noshell", {}, TriggeredBy.API)
    ended = await harness.wait(run.id)
    assert ended.end_reason is EndReason.START_FAILED
    assert "Could not start" in ended.description


async def test_environment_and_params_never_spliced(harness: Harness, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    script = (
        'echo "id=$RUNYARD_RUN_ID task=$RUNYARD_TASK rep=$RUNYARD_REPLICA_INDEX '
        'try=$RUNYARD_RETRY_ATTEMPT"; echo "who=$WHO arg1=$1 extra=$EXTRA"'
    )
    engine = await harness.start(
        task(
            "envy",
            script,
            env=(("EXTRA", "from-config"),),
            params=(ParamSpec("who"), ParamSpec("target", passing=ParamPassing.ARG)),
        )
    )
    evil = f"$(touch {marker}); `touch {marker}`"
    [run] = await engine.trigger("envy", {"who": evil, "target": evil}, TriggeredBy.API)
    await harness.wait(run.id)
    lines = harness.log_text(run.id)
    assert f"id={run.id} task=envy rep=0 try=0" in lines
    assert f"who={evil} arg1={evil} extra=from-config" in lines
    assert not marker.exists()


async def test_unknown_param_and_task(harness: Harness) -> None:
    engine = await harness.start(task("p", "true", params=(ParamSpec("a", required=True),)))
    with pytest.raises(InvalidInput) as caught:
        await engine.trigger("p", {"b": "1"}, TriggeredBy.API)
    assert caught.value.location == "body.params.b"
    with pytest.raises(InvalidInput, match="required"):
        await engine.trigger("p", {}, TriggeredBy.API)
    with pytest.raises(NotFound):
        await engine.trigger("nope", {}, TriggeredBy.API)
    assert harness.runs() == []  # nothing half-written


async def test_timeout_kills_a_script_that_ignores_sigterm(harness: Harness) -> None:
    engine = await harness.start(
        task(
            "stubborn",
            "trap '' TERM; echo ready; while true; do sleep 0.1; done",
            timeout=timedelta(seconds=0.5),
            graceful_stop=timedelta(seconds=0.5),
        )
    )
    [run] = await engine.trigger("stubborn", {}, TriggeredBy.API)
    ended = await harness.wait(run.id, timeout=20)
    assert ended.end_reason is EndReason.TIMEOUT
    assert ended.exit_code == 128 + signal.SIGKILL


@pytest.mark.parametrize("how", ["stop", "timeout"])
async def test_stop_and_timeout_kill_the_whole_group(
    harness: Harness, tmp_path: Path, how: str
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"sh -c 'sleep 300 & echo $! > {pidfile}; wait' & wait"
    timeout = timedelta(seconds=1) if how == "timeout" else None
    engine = await harness.start(task("forks", script, timeout=timeout))
    [run] = await engine.trigger("forks", {}, TriggeredBy.API)
    await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    grandchild = int(pidfile.read_text())
    assert pid_alive(grandchild)
    if how == "stop":
        await engine.stop(run.id)
    ended = await harness.wait(run.id)
    assert ended.end_reason is (EndReason.STOPPED if how == "stop" else EndReason.TIMEOUT)
    await until(lambda: not pid_alive(grandchild), timeout=5)


async def test_leftover_background_process_is_reaped_when_main_exits(
    harness: Harness, tmp_path: Path
) -> None:
    pidfile = tmp_path / "bg.pid"
    engine = await harness.start(task("bg", f"sleep 300 & echo $! > {pidfile}; echo done"))
    [run] = await engine.trigger("bg", {}, TriggeredBy.API)
    ended = await harness.wait(run.id, timeout=10)
    assert ended.end_reason is EndReason.SUCCESS
    await until(lambda: not pid_alive(int(pidfile.read_text())), timeout=5)


async def test_binary_garbage_and_long_lines(harness: Harness) -> None:
    script = (
        "head -c 200000 /dev/urandom; head -c 300000 /dev/zero | tr '\\0' 'x'; echo; echo tail-line"
    )
    engine = await harness.start(task("garbage", script))
    [run] = await engine.trigger("garbage", {}, TriggeredBy.API)
    ended = await harness.wait(run.id)
    assert ended.end_reason is EndReason.SUCCESS
    lines = harness.log_text(run.id)
    assert lines[-1] == "tail-line"
    assert max(len(line) for line in lines) <= 65536


async def test_stop_running_queued_and_ended(harness: Harness) -> None:
    engine = await harness.start(task("slow", "sleep 30"))
    [first] = await engine.trigger("slow", {}, TriggeredBy.API)
    [second] = await engine.trigger("slow", {}, TriggeredBy.API)
    await until(lambda: engine.live_run(first.id) is not None)
    stopped_queued = await engine.stop(second.id)
    assert (stopped_queued.end_reason, stopped_queued.exit_code) == (EndReason.STOPPED, -1)
    await engine.stop(first.id)
    ended = await harness.wait(first.id)
    assert ended.end_reason is EndReason.STOPPED
    with pytest.raises(RunAlreadyEnded):
        await engine.stop(first.id)
    with pytest.raises(NotFound):
        await engine.stop(str(ULID()))


async def test_overlap_skip_and_kill(harness: Harness) -> None:
    engine = await harness.start(
        task("skipper", "sleep 30", on_overlap=OverlapPolicy.SKIP),
        task("killer", "sleep 30", on_overlap=OverlapPolicy.KILL),
    )
    [a] = await engine.trigger("skipper", {}, TriggeredBy.API)
    [b] = await engine.trigger("skipper", {}, TriggeredBy.API)
    assert (b.status, b.end_reason, b.exit_code) == (RunStatus.ENDED, EndReason.SKIPPED, -1)
    [k1] = await engine.trigger("killer", {}, TriggeredBy.API)
    await until(lambda: engine.live_run(k1.id) is not None)
    [k2] = await engine.trigger("killer", {}, TriggeredBy.API)
    assert (await harness.wait(k1.id)).end_reason is EndReason.STOPPED
    await until(lambda: engine.live_run(k2.id) is not None)
    await engine.stop(k2.id)
    await engine.stop(a.id)


async def test_burst_of_500_triggers_with_max_queued_100(harness: Harness) -> None:
    engine = await harness.start(task("burst", "true", max_queued=100))
    results = await asyncio.gather(
        *(engine.trigger("burst", {}, TriggeredBy.API) for _ in range(500))
    )
    runs = [run for batch in results for run in batch]
    refused = [run for run in runs if run.end_reason is EndReason.QUEUE_FULL]
    assert len(refused) == 399
    assert all(run.exit_code == -1 for run in refused)
    accepted = [run for run in runs if run.status is RunStatus.PENDING]
    assert len(accepted) == 101
    for run in accepted:
        assert (await harness.wait(run.id)).end_reason is EndReason.SUCCESS
    counts = Counter(run.end_reason for run in harness.runs("burst"))
    assert counts == {EndReason.SUCCESS: 101, EndReason.QUEUE_FULL: 399}


async def test_queue_is_fifo_and_global_limit_holds(harness: Harness, tmp_path: Path) -> None:
    order = tmp_path / "order"
    tasks = [
        task(f"t{i}", f"echo $RUNYARD_RUN_ID >> {order}; sleep 0.2", max_concurrent=5)
        for i in range(3)
    ]
    engine = await harness.start(*tasks, max_concurrent_runs=2)
    triggered: list[Run] = []
    for i in range(9):
        triggered.extend(await engine.trigger(f"t{i % 3}", {}, TriggeredBy.API))
    peak = 0

    def sample() -> bool:
        nonlocal peak
        peak = max(peak, sum(engine.counts(f"t{i}")[0] for i in range(3)))
        return all(harness.store.get_run(r.id).status is RunStatus.ENDED for r in triggered)  # type: ignore[union-attr]

    await until(sample, timeout=30)
    assert peak <= 2
    # Two processes run at once, so the file's order is theirs; the engine's
    # start order is the start_at it recorded.
    assert sorted(order.read_text().split()) == sorted(run.id for run in triggered)
    stored = [harness.store.get_run(run.id) for run in triggered]
    starts = [run.start_at for run in stored if run is not None and run.start_at is not None]
    assert starts == sorted(starts) and len(starts) == len(triggered)


async def test_retries_make_new_runs(harness: Harness) -> None:
    engine = await harness.start(
        task("flaky", "exit 1", retry_attempts=2, retry_delay=timedelta(milliseconds=50))
    )
    [run] = await engine.trigger("flaky", {}, TriggeredBy.API)
    await until(lambda: len([r for r in harness.runs("flaky") if r.status is RunStatus.ENDED]) == 3)
    runs = sorted(harness.runs("flaky"), key=lambda r: r.retry_attempt)
    assert [r.retry_attempt for r in runs] == [0, 1, 2]
    assert [r.retry_of_run_id for r in runs] == [None, runs[0].id, runs[1].id]
    assert all(r.end_reason is EndReason.FAILED for r in runs)
    assert runs[0].id == run.id


async def test_replicas(harness: Harness) -> None:
    engine = await harness.start(task("wide", "echo $RUNYARD_REPLICA_INDEX; sleep 0.3", replicas=3))
    runs = await engine.trigger("wide", {}, TriggeredBy.API)
    assert [r.replica_index for r in runs] == [0, 1, 2]
    await until(lambda: engine.counts("wide")[0] == 3)  # side by side, not queued
    for run in runs:
        assert (await harness.wait(run.id)).end_reason is EndReason.SUCCESS
        assert harness.log_text(run.id) == [str(run.replica_index)]


async def test_log_on_full_kill_ends_as_log_overflow(harness: Harness) -> None:
    engine = await harness.start(
        task("noisy", "yes", log_max_size=64 * 1024, log_on_full=LogOnFull.KILL)
    )
    [run] = await engine.trigger("noisy", {}, TriggeredBy.API)
    ended = await harness.wait(run.id)
    assert ended.end_reason is EndReason.LOG_OVERFLOW
    assert any("log_max_size" in line for line in harness.log_text(run.id))


async def test_a_log_that_fills_while_the_process_is_spawned_still_stops_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under load a fast writer can fill the log before spawn() returns, when
    # there is no child to signal yet: the run must still be stopped, not left
    # running forever with its output dropped.
    real_spawn = executor.spawn

    async def spawn_then_report_full(**kwargs: Any) -> Any:
        child = await real_spawn(**kwargs)
        kwargs["on_log_full"]()
        return child

    monkeypatch.setattr(executor, "spawn", spawn_then_report_full)
    engine = await harness.start(
        task("forever", "sleep 60", log_max_size=64 * 1024, log_on_full=LogOnFull.KILL)
    )
    [run] = await engine.trigger("forever", {}, TriggeredBy.API)
    ended = await harness.wait(run.id)
    assert ended.end_reason is EndReason.LOG_OVERFLOW


async def test_shutdown_stops_running_runs_and_keeps_pending(harness: Harness) -> None:
    engine = await harness.start(task("long", "echo started; sleep 30"))
    [running] = await engine.trigger("long", {}, TriggeredBy.API)
    [pending] = await engine.trigger("long", {}, TriggeredBy.API)
    await until(lambda: harness.log_text(running.id) == ["started"])
    await engine.shutdown(timeout=10)
    harness.engine = None
    stopped = harness.store.get_run(running.id)
    assert stopped is not None and stopped.end_reason is EndReason.DAEMON_STOPPED
    still = harness.store.get_run(pending.id)
    assert still is not None and still.status is RunStatus.PENDING
    # The next daemon starts it.
    engine = await harness.start(task("long", "echo resumed"))
    assert (await harness.wait(pending.id)).end_reason is EndReason.SUCCESS


async def test_recovery_after_a_crash(harness: Harness) -> None:
    now = datetime.now(UTC)
    left_running = Run(str(ULID()), "work", RunStatus.RUNNING, now, TriggeredBy.API, start_at=now)
    left_pending = Run(str(ULID()), "work", RunStatus.PENDING, now, TriggeredBy.API)
    orphan = Run(str(ULID()), "gone", RunStatus.PENDING, now, TriggeredBy.API)
    # Spawned, but the daemon died before its `running` status was committed.
    left_starting = Run(str(ULID()), "work", RunStatus.PENDING, now, TriggeredBy.API)
    harness.store.apply([left_running, left_pending, orphan, left_starting], [])
    (harness.tmp_path / "started.log").write_text(f"{left_starting.id}\n")
    await harness.start(task("work", "echo ok", retry_attempts=1, retry_delay=timedelta(0)))
    crashed = harness.store.get_run(left_running.id)
    assert crashed is not None
    assert (crashed.end_reason, crashed.exit_code) == (EndReason.CRASHED, -2)
    starting = harness.store.get_run(left_starting.id)
    assert starting is not None
    assert (starting.end_reason, starting.exit_code) == (EndReason.CRASHED, -2)
    assert (await harness.wait(left_pending.id)).end_reason is EndReason.SUCCESS
    skipped = harness.store.get_run(orphan.id)
    assert skipped is not None and skipped.end_reason is EndReason.SKIPPED
    assert "no longer in the config" in skipped.description
    await until(
        lambda: any(
            r.retry_of_run_id == left_running.id and r.status is RunStatus.ENDED
            for r in harness.runs("work")
        )
    )
    await until(lambda: all(r.status is RunStatus.ENDED for r in harness.runs()))
    retried = {r.retry_of_run_id for r in harness.runs() if r.retry_attempt}
    assert retried == {left_running.id, left_starting.id}


async def test_retention_deletes_rows_and_logs(harness: Harness) -> None:
    engine = await harness.start(task("kept", "echo x", keep_runs=2))
    ids = []
    for _ in range(4):
        [run] = await engine.trigger("kept", {}, TriggeredBy.API)
        await harness.wait(run.id)
        ids.append(run.id)
    assert await engine.apply_retention() == 2
    assert {r.id for r in harness.runs("kept")} == set(ids[2:])
    assert not engine.log_path(ids[0]).exists()
    assert engine.log_path(ids[3]).exists()


async def test_keep_for_uses_age(harness: Harness) -> None:
    engine = await harness.start(task("aged", "true", keep_for=timedelta(hours=1)))
    old_end = datetime.now(UTC) - timedelta(hours=2)
    old = Run(
        str(ULID()),
        "aged",
        RunStatus.ENDED,
        old_end,
        TriggeredBy.API,
        end_reason=EndReason.SUCCESS,
        start_at=old_end,
        end_at=old_end,
    )
    harness.store.apply([old], [])
    [fresh] = await engine.trigger("aged", {}, TriggeredBy.API)
    await harness.wait(fresh.id)
    assert await engine.apply_retention() == 1
    assert [r.id for r in harness.runs("aged")] == [fresh.id]


async def test_reload_removing_a_task_skips_its_queued_runs(harness: Harness) -> None:
    engine = await harness.start(
        task("old", "echo started; sleep 1; echo done"), task("kept", "true")
    )
    [running] = await engine.trigger("old", {}, TriggeredBy.API)
    [queued] = await engine.trigger("old", {}, TriggeredBy.API)
    await until(lambda: harness.log_text(running.id) == ["started"])
    ended = await engine.replace_tasks({"kept": task("kept", "true")})
    assert [run.id for run in ended] == [queued.id]
    skipped = harness.store.get_run(queued.id)
    assert skipped is not None and skipped.end_reason is EndReason.SKIPPED
    assert "removed from the config by a reload" in skipped.description
    # The run in flight finishes with the definition it started with.
    finished = await harness.wait(running.id)
    assert finished.end_reason is EndReason.SUCCESS
    assert harness.log_text(running.id) == ["started", "done"]
    with pytest.raises(NotFound):
        await engine.trigger("old", {}, TriggeredBy.API)


async def test_an_ended_run_is_freed_as_it_ends_not_by_the_garbage_collector(
    harness: Harness,
) -> None:
    # A reference cycle through a run's process (its record -> the child -> the
    # output protocol -> a callback holding the record) kept every ended run
    # alive until the next collection: thousands of them between collections
    # in a busy daemon, the memory growth bench/memory.py measures.
    def alive() -> int:
        kinds = (executor.ActiveRun, ChildProcess)
        return sum(isinstance(thing, kinds) for thing in gc.get_objects())

    engine = await harness.start(task("t", "echo out; echo err >&2"))
    gc.collect()
    gc.disable()
    try:
        runs = [run for _ in range(20) for run in await engine.trigger("t", {}, TriggeredBy.API)]
        for run in runs:
            assert (await harness.wait(run.id)).end_reason is EndReason.SUCCESS
        await until(lambda: alive() == 0, timeout=5)
    finally:
        gc.enable()


async def test_an_idle_engine_collects_the_garbage_its_runs_left(harness: Harness) -> None:
    # The daemon's collector thresholds make full collections rare under load;
    # once nothing runs or waits, the engine collects (engine/idle_memory.py).
    class Cycle:
        me: object

    engine = await harness.start(task("t", "true"))
    gc.collect()
    gc.disable()  # only an explicit collection can free the cycle now
    try:
        cycle = Cycle()
        cycle.me = cycle
        freed = weakref.ref(cycle)
        del cycle
        [run] = await engine.trigger("t", {}, TriggeredBy.API)
        await harness.wait(run.id)
        await until(lambda: freed() is None, timeout=10)
    finally:
        gc.enable()
