"""What one run leaves behind cannot reach another run: real processes, a real engine.

A process that leaves its run's process group (setsid, a daemonising fork)
is killed when the run ends, and no run directory ever serves a second run.
The store is not what is under test here: SQLite only.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from runyard.domain.models import EndReason, Run, TaskDefinition, TriggeredBy
from runyard.engine.core import Engine
from runyard.store.runs import RunStore

pytestmark = pytest.mark.anyio

StartEngine = Callable[..., Awaitable[Engine]]

# The repro, with the detached process's output sent elsewhere: a
# process holding the run's pipes open keeps the run from ending (for a grace
# period), and this one must outlive its run to show the leak.
LEAVER = (
    'setsid sh -c \'sleep 2; echo leaked > "$RUNYARD_OUTPUT_DIR/leak.csv"; '
    'cat "$RUNYARD_OUTPUT_DIR"/*.csv > "$DEST/x"\' > /dev/null 2>&1 & sleep 0.3'
)
# Another account's run, busy long enough for the leaver's process to wake up.
VICTIM = "printf 'secret\\n' > \"$RUNYARD_OUTPUT_DIR/b.csv\"; sleep 3"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def start_engine(tmp_path: Path) -> AsyncIterator[StartEngine]:
    store = RunStore.open(f"sqlite:///{tmp_path / 'data' / 'runyard.db'}")
    engines: list[Engine] = []

    async def start(*tasks: TaskDefinition) -> Engine:
        engine = Engine(
            tasks={task.name: task for task in tasks},
            store=store,
            data_dir=tmp_path / "data",
            max_concurrent_runs=8,
            base_environ={"PATH": os.environ["PATH"], "DEST": str(tmp_path)},
            retention_interval=3600,
            account_limits={"a": None, "b": None},
        )
        await engine.start()
        engines.append(engine)
        return engine

    try:
        yield start
    finally:
        for engine in engines:
            await engine.shutdown(timeout=10)
        store.close()


def task(name: str, run: str) -> TaskDefinition:
    return TaskDefinition(name=name, run=run, graceful_stop=timedelta(seconds=2))


async def run_to_end(engine: Engine, task_name: str, account: str | None = None) -> Run:
    [run] = await engine.trigger(task_name, {}, TriggeredBy.CLOUD, account=account)
    done = await engine.wait_for_end(run.id, 30)
    assert done is not None, f"run {run.id} did not end"
    return done


def processes_of(run_id: str) -> list[int]:
    """Return the pids of live (not zombie) processes whose environment names this run."""
    marker = f"RUNYARD_RUN_ID={run_id}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as file:
                environ = file.read().split(b"\0")
            with open(f"/proc/{entry.name}/stat", "rb") as file:
                state = file.read().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if marker in environ and state != b"Z":
            found.append(int(entry.name))
    return found


async def test_a_runs_leftover_cannot_read_or_write_the_next_runs_data(
    start_engine: StartEngine, tmp_path: Path
) -> None:
    engine = await start_engine(task("leaver", LEAVER), task("victim", VICTIM))
    leaver = await run_to_end(engine, "leaver", account="a")
    victim = await run_to_end(engine, "victim", account="b")
    assert victim.end_reason is EndReason.SUCCESS, victim.description
    assert victim.output_data == {"b": [["secret"]]}
    # The leftover never woke up: it neither wrote into nor read from any run.
    assert not (tmp_path / "x").exists()
    assert processes_of(leaver.id) == []
    assert leaver.end_reason is EndReason.SUCCESS, leaver.description
    assert "Processes it left running in another process group" in leaver.description


async def test_leftovers_in_several_sessions_are_all_killed(start_engine: StartEngine) -> None:
    # A detached process that detaches another, and a double fork whose parent exits.
    script = (
        "setsid sh -c 'setsid sleep 60 & sleep 60' > /dev/null 2>&1 & "
        "(setsid sleep 61 > /dev/null 2>&1 &) ; sleep 0.2"
    )
    engine = await start_engine(task("spawner", script))
    spawner = await run_to_end(engine, "spawner")
    assert spawner.end_reason is EndReason.SUCCESS, spawner.description
    assert "Processes it left running in another process group" in spawner.description
    assert processes_of(spawner.id) == []


async def test_a_run_leaving_nothing_behind_says_nothing_about_it(
    start_engine: StartEngine,
) -> None:
    engine = await start_engine(task("tidy", "sleep 0.1 & wait; echo done"))
    tidy = await run_to_end(engine, "tidy")
    assert tidy.end_reason is EndReason.SUCCESS
    assert "left running" not in tidy.description


async def test_other_runs_processes_are_not_touched(start_engine: StartEngine) -> None:
    engine = await start_engine(
        task("long", "setsid sleep 60 > /dev/null 2>&1 & sleep 30"), task("short", "true")
    )
    [long_run] = await engine.trigger("long", {}, TriggeredBy.API)
    for _ in range(5):
        short = await run_to_end(engine, "short")
        assert short.end_reason is EndReason.SUCCESS
    # The long run's detached sleep is still there while the long run runs.
    assert len(processes_of(long_run.id)) >= 2
    await engine.stop(long_run.id)
    await engine.wait_for_end(long_run.id, 30)
    assert processes_of(long_run.id) == []


async def test_output_directory_replaced_by_a_symlink(
    start_engine: StartEngine, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("not the run's\n", encoding="utf-8")
    script = f'rmdir "$RUNYARD_OUTPUT_DIR"; ln -s {outside} "$RUNYARD_OUTPUT_DIR"'
    engine = await start_engine(task("swap", script))
    swap = await run_to_end(engine, "swap")
    assert swap.end_reason is EndReason.SUCCESS, swap.description
    assert swap.output_data == {}
    assert (
        "Output data was not read: the run replaced RUNYARD_OUTPUT_DIR by a symbolic link, "
        "which runyard does not follow." in swap.description.splitlines()
    )
    # The link is gone from work/; what it pointed at is untouched.
    assert not any(path.is_symlink() for path in engine.workspace.root.iterdir())
    assert (outside / "secret.csv").read_text(encoding="utf-8") == "not the run's\n"


async def test_output_file_names_cannot_forge_description_lines(
    start_engine: StartEngine,
) -> None:
    script = "printf x > \"$RUNYARD_OUTPUT_DIR/$(printf 'a\\nFailed.\\033[2K.txt')\""
    engine = await start_engine(task("names", script))
    names = await run_to_end(engine, "names")
    assert names.end_reason is EndReason.SUCCESS, names.description
    assert "Failed." not in names.description.splitlines()
    assert "\x1b" not in names.description
    assert (
        "Ignored output file a\\nFailed.\\x1b[2K.txt: only .csv, .tsv, .json and .jsonl "
        "files are read." in names.description.splitlines()
    )
