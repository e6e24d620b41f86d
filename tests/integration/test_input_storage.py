"""Input data out of the daemon's heap (issue 9, item 4), on SQLite and on PostgreSQL.

- list and report queries never select the data columns;
- large input data lives in a file while its run waits, not in the engine's
  queue, and a restart does not read it back;
- the process still gets exactly its input, also after a restart;
- max_queued_input refuses (and records nothing) past its cap.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from runyard.body_parser import BodyParser
from runyard.domain.models import Run, RunStatus, TaskDefinition, TriggeredBy
from runyard.domain.queries import RunQuery
from runyard.engine.core import Engine
from runyard.exceptions import InputQueueFull
from runyard.store import dashboard
from runyard.store.inputs import INLINE_INPUT_BYTES
from runyard.store.runs import RunStore

pytestmark = pytest.mark.anyio

DATA_COLUMNS = ("input_data", "output_data")

# Copies what the run was given where the test can read it after the run.
COPY_INPUT = (
    'cp "$RUNYARD_INPUT" "$DEST/$RUNYARD_RUN_ID.json"; '
    'cp "$RUNYARD_INPUT_CSV" "$DEST/$RUNYARD_RUN_ID.csv"'
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def large_tables(tag: str, rows: int = 3000) -> list[list[list[str]]]:
    """Return input data well over INLINE_INPUT_BYTES, different for each tag."""
    tables = [[[f"{tag}-{row}", "é,x", 'say "hi"'] for row in range(rows)]]
    assert (
        len(json.dumps(tables, separators=(",", ":"), ensure_ascii=False).encode())
        > INLINE_INPUT_BYTES
    )
    return tables


# ----- the store ------------------------------------------------------------------


@pytest.fixture
def statements(store: RunStore) -> Iterator[list[str]]:
    """Record the SQL the store sends to its database."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    engine = store._engine
    sa.event.listen(engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", record)


def test_list_and_report_queries_select_no_data_columns(
    store: RunStore, statements: list[str], make_run: Callable[..., Run]
) -> None:
    run = make_run(
        account="a",
        input_data=[[["in"]]],
        output_data={"out": [["x"]]},
        status=RunStatus.PENDING,
    )
    store.apply([run], [])
    statements.clear()

    listed, total = store.list_runs(RunQuery(limit=10))
    searched, _ = store.list_runs(RunQuery(limit=10, search=run.id[:10]))
    reports = store.account_runs("a", 10)
    by_secret = store.active_run_by_secret("nothing")
    # The dashboard's lists too.
    pages = [
        dashboard.recent_runs(store, 10),
        dashboard.recent_runs_of_tasks(store, [run.task_name], 5)[run.task_name],
        dashboard.runs_by_ids(store, [run.id]),
        dashboard.filtered_runs(
            store,
            RunQuery(limit=10),
            triggered_by=None,
            created_from=None,
            created_before=None,
            count_cap=100,
        )[0],
    ]
    assert statements, "the listener saw no statement: the test would pass vacuously"
    for statement in statements:
        assert not any(column in statement for column in DATA_COLUMNS), statement
    assert total == 1 and by_secret is None
    for found in (listed[0], searched[0], reports[0], *(page[0] for page in pages)):
        assert found.id == run.id
        assert (found.input_data, found.output_data) == (None, None)

    statements.clear()
    [active] = store.active_runs()
    assert not any("output_data" in statement for statement in statements)
    assert active.output_data is None and active.input_data == [[["in"]]]  # inline: small
    statements.clear()
    latest = store.latest_account_run("a", run.task_name)
    assert latest is not None and latest.output_data == {"out": [["x"]]}
    assert not any("input_data" in statement for statement in statements)
    # The single-run read still has everything.
    assert store.get_run(run.id) == run


def test_input_size_is_stored(store: RunStore, make_run: Callable[..., Run]) -> None:
    run = make_run(input_size=123_456)
    store.apply([run], [])
    [listed], _ = store.list_runs(RunQuery(limit=10))
    assert listed.input_size == 123_456
    assert listed.input_in_file


# ----- the engine ------------------------------------------------------------------


class Engines:
    """Engines over one store and data dir, one after another, like restarted daemons."""

    def __init__(self, store: RunStore, data_dir: Path) -> None:
        self.store = store
        self.data_dir = data_dir
        self.current: Engine | None = None

    async def start(
        self, *tasks: TaskDefinition, account_input_limits: dict[str, int | None] | None = None
    ) -> Engine:
        if self.current is not None:
            await self.current.shutdown(timeout=10)
        self.current = Engine(
            tasks={task.name: task for task in tasks},
            store=self.store,
            data_dir=self.data_dir,
            max_concurrent_runs=8,
            base_environ={"PATH": os.environ["PATH"]},
            retention_interval=3600,
            account_input_limits=account_input_limits,
        )
        await self.current.start()
        return self.current


@pytest.fixture
async def engines(store: RunStore, tmp_path: Path) -> AsyncIterator[Engines]:
    started = Engines(store, tmp_path / "data")
    yield started
    if started.current is not None:
        await started.current.shutdown(timeout=10)


def task(name: str, run: str, **overrides: object) -> TaskDefinition:
    overrides.setdefault("graceful_stop", timedelta(seconds=2))
    return TaskDefinition(name=name, run=run, **overrides)  # type: ignore[arg-type]


def queued_runs(engine: Engine) -> list[Run]:
    return [run for queue in engine._queues.lanes.values() for run in queue]


async def until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_queued_large_input_waits_on_disk_and_reaches_its_process_after_a_restart(
    engines: Engines, store: RunStore, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    # The first run holds the only slot until the file `go` appears.
    script = f'while [ ! -e "$DEST/go" ]; do sleep 0.05; done; {COPY_INPUT}'
    definition = task("ingest", script, max_concurrent=1, env=(("DEST", str(dest)),))
    engine = await engines.start(definition)
    [holder] = await engine.trigger("ingest", {}, TriggeredBy.API)
    tables = {tag: large_tables(tag) for tag in ("a", "b", "c")}
    waiting: dict[str, Run] = {}
    expected: dict[str, list[list[list[str]]]] = {}
    for data in tables.values():
        [run] = await engine.trigger("ingest", {}, TriggeredBy.API, data)
        waiting[run.id] = run
        expected[run.id] = data
        assert run.input_data is None  # the returned run does not carry it either
        assert run.input_size == len(
            json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        )

    queued = queued_runs(engine)
    assert {run.id for run in queued} == set(waiting)
    assert all(run.input_data is None and run.input_size for run in queued)
    for run_id in waiting:
        assert engine.inputs.json_path(run_id).is_file()
    assert all(run.input_data is None for run in store.active_runs())

    # A new daemon: the holder is ended by the shutdown, the waiting runs stay
    # pending, and come back without their input in memory.
    engine = await engines.start(definition)
    (dest / "go").touch()
    await until(lambda: len(list(dest.glob("*.json"))) == len(waiting))
    for run_id in waiting:
        ended = await engine.wait_for_end(run_id, 30)
        assert ended is not None and ended.end_reason is not None
        got = json.loads((dest / f"{run_id}.json").read_text(encoding="utf-8"))
        assert got == expected[run_id]
        first_line = (dest / f"{run_id}.csv").read_text(encoding="utf-8").splitlines()[0]
        assert first_line == expected[run_id][0][0][0] + ',"é,x","say ""hi"""'
        # The input stays the run's record, for the endpoints that show one run.
        assert engine.inputs.read_tables(run_id) == expected[run_id]
    assert holder.input_size is None


async def test_small_input_stays_inline(engines: Engines, tmp_path: Path) -> None:
    engine = await engines.start(task("small", "true"))
    [run] = await engine.trigger("small", {}, TriggeredBy.API, [[["a"]]])
    assert run.input_data == [[["a"]]] and run.input_size == len(b'[[["a"]]]')
    assert not engine.inputs.json_path(run.id).exists()


async def test_max_queued_input_refuses_past_the_task_cap_and_records_nothing(
    engines: Engines, store: RunStore
) -> None:
    one = large_tables("x")
    size = len(json.dumps(one, separators=(",", ":"), ensure_ascii=False).encode())
    definition = task("capped", "sleep 30", max_concurrent=1, max_queued_input=2 * size + 10)
    engine = await engines.start(definition)
    await engine.trigger("capped", {}, TriggeredBy.API, one)  # starts: not queued
    await engine.trigger("capped", {}, TriggeredBy.API, one)
    await engine.trigger("capped", {}, TriggeredBy.API, one)
    before = store.list_runs(RunQuery(limit=100))[1]
    files_before = sorted(engine.inputs.root.rglob("*.json"))
    with pytest.raises(InputQueueFull, match=r"task 'capped'.*max_queued_input"):
        await engine.trigger("capped", {}, TriggeredBy.API, one)
    assert store.list_runs(RunQuery(limit=100))[1] == before
    assert sorted(engine.inputs.root.rglob("*.json")) == files_before
    # A trigger without input data is not held to the cap.
    await engine.trigger("capped", {}, TriggeredBy.API)
    # Once a queued run has gone, its bytes are free again.
    waiting = queued_runs(engine)
    await engine.stop(waiting[0].id)
    await engine.trigger("capped", {}, TriggeredBy.API, one)


async def test_max_queued_input_of_an_account(engines: Engines) -> None:
    one = large_tables("y")
    size = len(json.dumps(one, separators=(",", ":"), ensure_ascii=False).encode())
    definitions = [task(name, "sleep 30", max_concurrent=1) for name in ("t1", "t2")]
    engine = await engines.start(*definitions, account_input_limits={"acme": size + 10})
    for name in ("t1", "t2"):
        await engine.trigger(name, {}, TriggeredBy.CLOUD, account="acme")  # hold the slots
    await engine.trigger("t1", {}, TriggeredBy.CLOUD, one, account="acme")
    with pytest.raises(InputQueueFull, match=r"account 'acme'"):
        await engine.trigger("t2", {}, TriggeredBy.CLOUD, one, account="acme")
    # Another account, and runs without an account, have room.
    await engine.trigger("t2", {}, TriggeredBy.CLOUD, one, account="other")
    await engine.trigger("t2", {}, TriggeredBy.API, one)


async def test_a_retry_gets_the_input_of_the_run_it_retries(
    engines: Engines, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    script = f'{COPY_INPUT}; [ "$RUNYARD_RETRY_ATTEMPT" = 1 ] || exit 1'
    definition = task(
        "flaky",
        script,
        retry_attempts=1,
        retry_delay=timedelta(0),
        env=(("DEST", str(dest)),),
    )
    engine = await engines.start(definition)
    data = large_tables("r")
    [first] = await engine.trigger("flaky", {}, TriggeredBy.API, data)
    await until(lambda: len(list(dest.glob("*.json"))) == 2)
    for copy in dest.glob("*.json"):
        assert json.loads(copy.read_text(encoding="utf-8")) == data
    retry_id = next(p.stem for p in dest.glob("*.json") if p.stem != first.id)
    # Hard links: one copy of the data on disk, each run its own names.
    assert (
        os.stat(engine.inputs.json_path(first.id)).st_ino
        == os.stat(engine.inputs.json_path(retry_id)).st_ino
    )


async def test_retention_deletes_input_files(engines: Engines, store: RunStore) -> None:
    engine = await engines.start(task("kept", "true", keep_runs=1))
    runs = [
        (await engine.trigger("kept", {}, TriggeredBy.API, large_tables(str(n))))[0]
        for n in range(2)
    ]
    for run in runs:
        assert await engine.wait_for_end(run.id, 30) is not None
    assert await engine.apply_retention() == 1
    assert not engine.inputs.json_path(runs[0].id).exists()
    assert engine.inputs.json_path(runs[1].id).exists()
    assert engine.inputs.read_tables(runs[1].id) == large_tables("1")


# ----- the body parser's workers ----------------------------------------------------


async def test_body_parser_workers_stop_when_idle_and_start_again(tmp_path: Path) -> None:
    """A worker keeps the heap of the largest body it parsed: it goes away when idle."""
    parser = BodyParser(tmp_path / "inputs", idle_seconds=0.2)
    body = json.dumps({"name": "x", "data": large_tables("w")}).encode()
    try:
        parsed = await parser.parse(body, "01WORKER0000000000000000A")
        assert parsed.staged is not None and parsed.staged.wrote_file
        assert parser.running
        await until(lambda: not parser.running, timeout=10)
        again = await parser.parse(body, "01WORKER0000000000000000B")
        assert again.members == {"name": "x"} and parser.running
    finally:
        parser.close()
    assert not parser.running
