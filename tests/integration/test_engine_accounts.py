"""The engine with v3 accounts: per-account limits, queue lanes, input and output data.

Real processes and a real store, on SQLite and on PostgreSQL (the `store` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ulid import ULID

from runyard.domain.accounts import report_status
from runyard.domain.models import (
    EXIT_NOT_RUN,
    EndReason,
    Run,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.engine.core import Engine
from runyard.exceptions import RunAlreadyEnded
from runyard.store.logs import read_lines
from runyard.store.runs import RunStore

pytestmark = pytest.mark.anyio

SLEEPER = "echo started; sleep 30"
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)

StartEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def task(name: str, run: str, **overrides: object) -> TaskDefinition:
    overrides.setdefault("graceful_stop", timedelta(seconds=2))
    # Room for many runs of the task: the limits under test are the account's and the daemon's.
    overrides.setdefault("max_concurrent", 10)
    return TaskDefinition(name=name, run=run, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def start_engine(store: RunStore, tmp_path: Path) -> AsyncIterator[StartEngine]:
    """Return a starter of one Engine over the store; it is shut down after the test."""
    engines: list[Engine] = []

    async def start(
        *tasks: TaskDefinition,
        account_limits: Mapping[str, int | None] | None = None,
        max_concurrent_runs: int = 8,
    ) -> Engine:
        engine = Engine(
            tasks={t.name: t for t in tasks},
            store=store,
            data_dir=tmp_path / "data",
            max_concurrent_runs=max_concurrent_runs,
            base_environ={"PATH": os.environ["PATH"]},
            retention_interval=3600,
            account_limits=account_limits,
        )
        await engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        await engine.shutdown(timeout=10)


async def until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def ended(engine: Engine, run: Run, timeout: float = 30) -> Run:
    result = await engine.wait_for_end(run.id, timeout)
    assert result is not None, f"run {run.id} did not end within {timeout}s"
    return result


async def stop_and_wait(engine: Engine, *runs: Run) -> None:
    """Stop the runs, running or still waiting, and wait until each has ended."""
    for run in runs:
        with contextlib.suppress(RunAlreadyEnded):
            await engine.stop(run.id)
    for run in runs:
        await ended(engine, run)


async def trigger(engine: Engine, task_name: str, account: str | None = None) -> Run:
    by = TriggeredBy.API if account is None else TriggeredBy.CLOUD
    [run] = await engine.trigger(task_name, {}, by, account=account)
    return run


def log_text(engine: Engine, run_id: str) -> list[str]:
    return [line.text for line in read_lines(engine.log_path(run_id), 0, 100_000)]


def stored(store: RunStore, run: Run) -> Run:
    found = store.get_run(run.id)
    assert found is not None
    return found


# ----- the account limit ---------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2])
async def test_account_limit_queues_runs(
    start_engine: StartEngine, store: RunStore, limit: int
) -> None:
    engine = await start_engine(task("sleeper", SLEEPER), account_limits={"a": limit})
    running = [await trigger(engine, "sleeper", account="a") for _ in range(limit)]
    assert all(engine.is_started(run.id) for run in running)

    queued = await trigger(engine, "sleeper", account="a")
    assert queued.status is RunStatus.PENDING
    assert not engine.is_started(queued.id)
    runs_text = "1 run" if limit == 1 else f"{limit} runs"
    assert f"Queued: the account's limit of {runs_text} at once was reached" in queued.description
    assert engine.counts("sleeper") == (limit, 1)
    # Nothing frees a slot, so it keeps waiting.
    await asyncio.sleep(0.3)
    assert not engine.is_started(queued.id)
    assert stored(store, queued).status is RunStatus.PENDING

    await engine.stop(running[0].id)
    await ended(engine, running[0])
    # The slot is handed on the moment the run ends.
    assert engine.is_started(queued.id)
    await until(lambda: log_text(engine, queued.id) == ["started"])
    await stop_and_wait(engine, *running[1:], queued)


async def test_runs_of_one_account_start_first_in_first_out(
    start_engine: StartEngine, store: RunStore, tmp_path: Path
) -> None:
    order = tmp_path / "order"
    script = f'echo "$RUNYARD_RUN_ID" >> {order}; sleep 0.2'
    engine = await start_engine(task("t1", script), task("t2", script), account_limits={"a": 1})
    # Two tasks, interleaved: FIFO holds across the account's lanes, not only inside one.
    triggered = [
        await trigger(engine, name, account="a") for name in ["t1", "t2", "t1", "t2", "t1"]
    ]
    assert [engine.is_started(run.id) for run in triggered] == [True] + [False] * 4
    for run in triggered:
        assert (await ended(engine, run)).end_reason is EndReason.SUCCESS
    assert order.read_text().split() == [run.id for run in triggered]
    runs = [stored(store, run) for run in triggered]
    for before, after in zip(runs, runs[1:], strict=False):
        # One at a time: each starts once the previous one has ended.
        assert before.end_at is not None and after.start_at is not None
        assert after.start_at >= before.end_at


async def test_a_saturated_account_holds_back_only_itself(start_engine: StartEngine) -> None:
    engine = await start_engine(
        task("shared", SLEEPER), task("other", SLEEPER), account_limits={"a": 1, "b": 1}
    )
    a_running = await trigger(engine, "shared", account="a")
    a_waiting = await trigger(engine, "shared", account="a")
    a_other_task = await trigger(engine, "other", account="a")
    assert engine.is_started(a_running.id)
    assert not engine.is_started(a_waiting.id)
    assert not engine.is_started(a_other_task.id)

    # Same task, another account: its own lane, so it starts at once.
    b_run = await trigger(engine, "shared", account="b")
    # An account without a limit of its own, and a REST run (account None): at once too.
    c_run = await trigger(engine, "shared", account="c")
    rest_run = await trigger(engine, "shared")
    assert engine.is_started(b_run.id)
    assert engine.is_started(c_run.id)
    assert engine.is_started(rest_run.id)
    for run in (b_run, c_run, rest_run):
        assert "Queued" not in run.description
    # b is full now, and queues behind nothing but itself.
    b_waiting = await trigger(engine, "shared", account="b")
    assert not engine.is_started(b_waiting.id)
    assert engine.counts("shared") == (4, 2)

    # a's slot goes to a's oldest waiting run; b's queue does not move.
    await engine.stop(a_running.id)
    await ended(engine, a_running)
    assert engine.is_started(a_waiting.id)
    assert not engine.is_started(a_other_task.id)
    assert not engine.is_started(b_waiting.id)
    await stop_and_wait(engine, a_waiting)
    assert engine.is_started(a_other_task.id)
    await stop_and_wait(engine, a_other_task, b_run, b_waiting, c_run, rest_run)


async def test_queued_runs_have_no_start_and_use_no_runtime(
    start_engine: StartEngine, store: RunStore
) -> None:
    engine = await start_engine(task("sleeper", SLEEPER), account_limits={"a": 1})
    first = await trigger(engine, "sleeper", account="a")
    waiting = [await trigger(engine, "sleeper", account="a") for _ in range(3)]
    await until(lambda: stored(store, first).status is RunStatus.RUNNING)
    for run in waiting:
        assert run.start_at is None
        row = stored(store, run)
        assert (row.status, row.start_at, row.end_at) == (RunStatus.PENDING, None, None)
        assert report_status(row) == "Running"  # the v3 API has no queued status
    intervals = store.runtime_intervals("a", LONG_AGO)
    assert len(intervals) == 1
    start, end = intervals[0]
    assert end is None and start == stored(store, first).start_at
    # Stopped while still waiting (first still holds the slot), they never start.
    await stop_and_wait(engine, *waiting)
    for run in waiting:
        row = stored(store, run)
        assert (row.end_reason, row.start_at) == (EndReason.STOPPED, None)
    assert len(store.runtime_intervals("a", LONG_AGO)) == 1
    await stop_and_wait(engine, first)


async def test_the_daemon_wide_limit_still_applies(start_engine: StartEngine) -> None:
    engine = await start_engine(
        task("shared", SLEEPER), account_limits={"a": 5, "b": None}, max_concurrent_runs=2
    )
    a_run = await trigger(engine, "shared", account="a")
    b_run = await trigger(engine, "shared", account="b")
    c_run = await trigger(engine, "shared", account="c")
    rest_run = await trigger(engine, "shared")
    assert engine.is_started(a_run.id) and engine.is_started(b_run.id)
    assert not engine.is_started(c_run.id) and not engine.is_started(rest_run.id)
    assert "the daemon's limit of 2 runs at once was reached" in c_run.description
    assert "the daemon's limit of 2 runs at once was reached" in rest_run.description

    await engine.stop(a_run.id)
    await ended(engine, a_run)
    # FIFO across lanes: c was triggered before the REST run.
    assert engine.is_started(c_run.id)
    assert not engine.is_started(rest_run.id)
    await engine.stop(b_run.id)
    await ended(engine, b_run)
    assert engine.is_started(rest_run.id)
    await stop_and_wait(engine, c_run, rest_run)


async def test_queued_runs_of_a_removed_task_end_skipped(
    start_engine: StartEngine, store: RunStore
) -> None:
    keep = task("keep", SLEEPER)
    engine = await start_engine(keep, task("gone", SLEEPER), account_limits={"a": 1})
    running = await trigger(engine, "keep", account="a")
    gone_a = await trigger(engine, "gone", account="a")
    keep_waiting = await trigger(engine, "keep", account="a")
    gone_again = await trigger(engine, "gone", account="a")
    assert not engine.is_started(gone_a.id)

    ended_runs = await engine.replace_tasks({"keep": keep})
    assert sorted(run.id for run in ended_runs) == sorted([gone_a.id, gone_again.id])
    for run in [*ended_runs, stored(store, gone_a), stored(store, gone_again)]:
        assert (run.status, run.end_reason, run.exit_code) == (
            RunStatus.ENDED,
            EndReason.SKIPPED,
            EXIT_NOT_RUN,
        )
        assert run.start_at is None and run.end_at is not None
        assert "Task 'gone' was removed from the config by a reload." in run.description
        assert report_status(run) == "Failure"
    assert engine.counts("gone") == (0, 0)
    # The run in flight and the account's other waiting run are untouched.
    assert engine.is_started(running.id)
    assert stored(store, keep_waiting).status is RunStatus.PENDING
    await engine.stop(running.id)
    await ended(engine, running)
    assert engine.is_started(keep_waiting.id)
    await stop_and_wait(engine, keep_waiting)


async def test_is_started(start_engine: StartEngine) -> None:
    engine = await start_engine(task("sleeper", SLEEPER), account_limits={"a": 1})
    assert engine.is_started(str(ULID())) is False
    first = await trigger(engine, "sleeper", account="a")
    second = await trigger(engine, "sleeper", account="a")
    # Started means holding a slot: true as soon as trigger returns, before the process exists.
    assert engine.is_started(first.id) is True
    assert engine.is_started(second.id) is False
    await engine.stop(second.id)
    assert (await ended(engine, second)).end_reason is EndReason.STOPPED
    assert engine.is_started(second.id) is False
    await stop_and_wait(engine, first)
    assert engine.is_started(first.id) is False


# ----- input and output data ----------------------------------------------------------

TABLES = [[["name", "note"], ["Zoë", "a,b"], ["x", 'say "hi"']], [["second table"]]]
IO_SCRIPT = r"""
cp "$RUNYARD_INPUT" "$DEST/input.json"
cp "$RUNYARD_INPUT_CSV" "$DEST/input.csv"
printf '%s' "$RUNYARD_OUTPUT_DIR" > "$DEST/output_dir"
printf 'a,b\n1,"x,y"\n' > "$RUNYARD_OUTPUT_DIR/sheet.csv"
printf '[["x", 2, true]]' > "$RUNYARD_OUTPUT_DIR/more.json"
"""


@pytest.mark.parametrize("account", ["a", None])
async def test_input_files_and_output_data(
    start_engine: StartEngine, store: RunStore, tmp_path: Path, account: str | None
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    engine = await start_engine(
        task("io", IO_SCRIPT, env=(("DEST", str(dest)),)), account_limits={"a": 1}
    )
    by = TriggeredBy.API if account is None else TriggeredBy.CLOUD
    [run] = await engine.trigger("io", {}, by, TABLES, account=account)
    done = await ended(engine, run)
    assert done.end_reason is EndReason.SUCCESS, done.description

    assert json.loads((dest / "input.json").read_text(encoding="utf-8")) == TABLES
    # The first table as CSV, quoted where needed.
    assert (dest / "input.csv").read_bytes() == 'name,note\nZoë,"a,b"\nx,"say ""hi"""\n'.encode()
    expected = {"sheet": [["a", "b"], ["1", "x,y"]], "more": [["x", "2", "true"]]}
    assert done.output_data == expected
    assert stored(store, run).output_data == expected
    assert stored(store, run).input_data == TABLES
    # The workspace is gone once the run has ended.
    output_dir = Path((dest / "output_dir").read_text(encoding="utf-8"))
    assert output_dir.name == run.id
    assert not output_dir.exists()
    assert not engine.workspace.input_path(run.id).exists()
    assert not engine.workspace.path(run.id).exists()


async def test_without_input_there_are_no_input_files(
    start_engine: StartEngine, store: RunStore
) -> None:
    script = (
        'echo "input=${RUNYARD_INPUT-unset} csv=${RUNYARD_INPUT_CSV-unset}"; '
        'ls -A "$RUNYARD_OUTPUT_DIR" | wc -l'
    )
    engine = await start_engine(task("plain", script))
    run = await trigger(engine, "plain", account="a")
    done = await ended(engine, run)
    assert done.end_reason is EndReason.SUCCESS
    assert log_text(engine, run.id) == ["input=unset csv=unset", "0"]
    assert done.output_data in ({}, None)
    assert stored(store, run).output_data in ({}, None)


async def test_live_output_while_running(start_engine: StartEngine, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = (
        "printf 'k,v\\n' > \"$RUNYARD_OUTPUT_DIR/live.csv\"; "
        f'while [ ! -e "{gate}" ]; do sleep 0.05; done; '
        "printf 'k,v\\ndone,1\\n' > \"$RUNYARD_OUTPUT_DIR/live.csv\""
    )
    engine = await start_engine(task("writer", script), account_limits={"a": 1})
    run = await trigger(engine, "writer", account="a")
    waiting = await trigger(engine, "writer", account="a")
    assert await engine.live_output(str(ULID())) is None

    seen: dict[str, list[list[str]]] | None = None

    async def poll() -> None:
        nonlocal seen
        deadline = asyncio.get_running_loop().time() + 15
        while seen != {"live": [["k", "v"]]}:
            assert asyncio.get_running_loop().time() < deadline, f"live output: {seen}"
            seen = await engine.live_output(run.id)
            await asyncio.sleep(0.02)

    await poll()
    # A queued run has no workspace yet, so nothing to show.
    assert await engine.live_output(waiting.id) is None
    gate.touch()
    done = await ended(engine, run)
    assert done.output_data == {"live": [["k", "v"], ["done", "1"]]}
    # Once ended, the frozen copy is the run's output_data; the engine has nothing live.
    assert await engine.live_output(run.id) is None
    second = await ended(engine, waiting)  # the gate is open: it runs straight through
    assert second.output_data == {"live": [["k", "v"], ["done", "1"]]}
