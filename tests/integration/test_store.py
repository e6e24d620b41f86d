"""RunStore against SQLite and PostgreSQL: schema, writes, listing, counters, retention."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runyard.domain.models import EndReason, Run, RunStatus, TriggeredBy
from runyard.domain.queries import RunQuery, SortDirection, SortField
from runyard.exceptions import StoreError
from runyard.store import RunStore, database, database_url
from runyard.store.database import HEAD_REVISION, MIGRATIONS_DIR

MakeRun = Callable[..., Run]

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TASKS = ("backup", "Report", "sync-db")
ENDINGS: tuple[tuple[EndReason, int, bool], ...] = (  # reason, exit code, started
    (EndReason.SUCCESS, 0, True),
    (EndReason.FAILED, 1, True),
    (EndReason.TIMEOUT, 143, True),
    (EndReason.SKIPPED, -1, False),
    (EndReason.FAILED, 1, True),
)


def build_runs(make_run: MakeRun) -> list[Run]:
    """Return 40 runs over three tasks with NULLs and ties in every sort key."""
    result = []
    for i in range(40):
        created = T0 + timedelta(minutes=i // 2)  # pairs share created_at
        start = created + timedelta(seconds=5)
        fields: dict[str, Any] = {
            "triggered_by": (TriggeredBy.CRON, TriggeredBy.API, TriggeredBy.CLOUD)[i % 3],
            "external_execution_id": f"exec-{i}" if i % 4 == 0 else None,
        }
        if i % 5 == 0:
            status = RunStatus.PENDING
        elif i % 5 == 1:
            status = RunStatus.RUNNING
            fields["start_at"] = start
        else:
            status = RunStatus.ENDED
            reason, exit_code, started = ENDINGS[i % len(ENDINGS)]
            fields.update(end_reason=reason, exit_code=exit_code, end_at=start)
            if started:
                fields.update(start_at=start, end_at=start + timedelta(seconds=i % 3))
        result.append(make_run(TASKS[i % 3], status, created, **fields))
    result.append(
        make_run(
            "odd",
            RunStatus.ENDED,
            T0,
            end_reason=EndReason.FAILED,
            external_execution_id="50%_off\\x",
        )
    )
    return result


@pytest.fixture
def filled(store: RunStore, make_run: MakeRun) -> tuple[RunStore, list[Run]]:
    runs = build_runs(make_run)
    store.apply(runs, [])
    return store, runs


def sort_value(run: Run, field: SortField) -> object:
    return {
        SortField.TASK_NAME: run.task_name,
        SortField.STATUS: run.status.value,
        SortField.START_AT: run.start_at,
        SortField.EXIT_CODE: run.exit_code,
        SortField.DURATION: run.duration_ms,
        SortField.CREATED_AT: run.created_at,
    }[field]


def matches(run: Run, query: RunQuery) -> bool:
    if query.task_name is not None and run.task_name != query.task_name:
        return False
    if query.status is not None and run.status is not query.status:
        return False
    if query.end_reason is not None and run.end_reason is not query.end_reason:
        return False
    if query.search:
        searched = (
            run.id,
            run.task_name,
            run.status.value,
            run.end_reason.value if run.end_reason else None,
            run.triggered_by.value,
            run.external_execution_id,
        )
        return any(query.search.lower() in value.lower() for value in searched if value)
    return True


def expected(runs: list[Run], query: RunQuery) -> list[str]:
    """Return the ids the query should list: NULL is the smallest value, ties by id."""

    def key(run: Run) -> tuple[tuple[object, ...], str]:
        value = sort_value(run, query.sort_field)
        return ((0,) if value is None else (1, value)), run.id

    ordered = sorted(
        (run for run in runs if matches(run, query)),
        key=key,
        reverse=query.sort_direction is SortDirection.DESC,
    )
    return [run.id for run in ordered]


def list_all(store: RunStore, query: RunQuery) -> tuple[list[str], int]:
    page, total = store.list_runs(replace(query, limit=1000, offset=0))
    return [run.id for run in page], total


# --- schema -------------------------------------------------------------------


def test_head_revision_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_reopening_an_up_to_date_database_does_not_load_alembic(store_url: str) -> None:
    # In a process of its own: this one has imported Alembic already.
    script = (
        "import sys\n"
        "from runyard.store import RunStore\n"
        "RunStore.open(sys.argv[1]).close()\n"
        "fresh = 'alembic' in sys.modules\n"
        "for name in [m for m in sys.modules if m == 'alembic' or m.startswith('alembic.')]:\n"
        "    del sys.modules[name]\n"
        "RunStore.open(sys.argv[1]).close()\n"
        "print(fresh, 'alembic' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, store_url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # The first open migrated a new database with Alembic; the second needed none.
    assert done.stdout.split() == ["True", "False"]


def test_migrations_apply_to_empty_database_and_reopen_is_idempotent(
    store_url: str, make_run: MakeRun
) -> None:
    run = make_run()
    first = RunStore.open(store_url)
    first.apply([run], [])
    first.close()

    second = RunStore.open(store_url)
    try:
        assert second.get_run(run.id) == run
    finally:
        second.close()

    engine = sa.create_engine(database_url(Path("."), {"RUNYARD_DATABASE_URL": store_url}))
    try:
        inspector = sa.inspect(engine)
        assert {"runs", "run_counts", "alembic_version"} <= set(inspector.get_table_names())
        assert len(inspector.get_indexes("runs")) >= 15
        with engine.connect() as connection:
            versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            assert versions.scalars().all() == [HEAD_REVISION]
    finally:
        engine.dispose()


def test_migration_0012_adds_the_v3_calls_table_and_downgrades(store_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    engine = database.create_engine(store_url)
    try:
        database.migrate(engine, "0011")
        assert "v3_calls" not in sa.inspect(engine).get_table_names()
        database.migrate(engine)
        # On SQLite too: one schema everywhere, the table unused there.
        indexes = sa.inspect(engine).get_indexes("v3_calls")
        assert [(index["name"], index["column_names"]) for index in indexes] == [
            ("ix_v3_calls_key_at", ["key_id", "at"])
        ]
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        with engine.connect() as connection:
            connection.execution_options(**{database.WRITE_OPTION: True})
            with connection.begin():
                config.attributes["connection"] = connection
                command.downgrade(config, "0011")
        assert "v3_calls" not in sa.inspect(engine).get_table_names()
        database.migrate(engine)
        assert "v3_calls" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "nosuchdb://somewhere/x",
        "this is not a url",
        "postgresql+psycopg://postgres@127.0.0.1:1/nothing",
        "sqlite:////proc/no/such/dir/runyard.db",
    ],
)
def test_bad_url_gives_store_error(url: str) -> None:
    with pytest.raises(StoreError):
        RunStore.open(url)


@pytest.mark.parametrize(
    ("environ", "want"),
    [
        ({}, "sqlite:////data/runyard.db"),
        ({"RUNYARD_DATABASE_URL": ""}, "sqlite:////data/runyard.db"),
        ({"RUNYARD_DATABASE_URL": "postgresql://u:p@h/db"}, "postgresql+psycopg://u:p@h/db"),
        ({"RUNYARD_DATABASE_URL": "postgres://u@h/db"}, "postgresql+psycopg://u@h/db"),
        ({"RUNYARD_DATABASE_URL": "postgresql+psycopg://h/db"}, "postgresql+psycopg://h/db"),
        ({"RUNYARD_DATABASE_URL": "sqlite:////x/y.db"}, "sqlite:////x/y.db"),
    ],
)
def test_database_url(environ: dict[str, str], want: str) -> None:
    assert database_url(Path("/data"), environ) == want


# --- writes and reads -----------------------------------------------------------


def full_run(make_run: MakeRun) -> Run:
    """Return a run with every field set to something other than its default."""
    return make_run(
        "deploy",
        RunStatus.ENDED,
        T0,
        triggered_by=TriggeredBy.CLOUD,
        exit_code=3,
        end_reason=EndReason.FAILED,
        start_at=T0 + timedelta(seconds=1, microseconds=1),
        end_at=T0 + timedelta(minutes=2, microseconds=999999),
        replica_index=2,
        retry_attempt=1,
        retry_of_run_id=make_run().id,
        external_execution_id="ext-42",
        params={"env": "prod", "ünï": "cödé"},
        description="nightly deploy",
        not_before=T0 - timedelta(days=400),
        input_data=[[["a", "b"], ["c", "d"]]],
        output_data={"sheet": [["x", "1"]]},
    )


ROUND_TRIPS: dict[str, Callable[[MakeRun], Run]] = {
    "minimal": lambda make_run: make_run(),
    "full": full_run,
    "empty-data": lambda make_run: replace(
        full_run(make_run), input_data=[], output_data={}, params={}
    ),
    "non-utc-offset": lambda make_run: make_run(
        created_at=datetime(2025, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    ),
}


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_insert_get_round_trip(store: RunStore, make_run: MakeRun, name: str) -> None:
    run = ROUND_TRIPS[name](make_run)
    store.apply([run], [])
    got = store.get_run(run.id)
    assert got == run
    assert got is not None
    for stamp in (got.created_at, got.start_at, got.end_at, got.not_before):
        assert stamp is None or stamp.tzinfo == UTC


def test_update_changes_every_mutable_field(store: RunStore, make_run: MakeRun) -> None:
    pending = make_run("deploy", params={"a": "1"})
    store.apply([pending], [])
    ended = replace(
        full_run(make_run),
        id=pending.id,
        task_name=pending.task_name,
        created_at=pending.created_at,
        triggered_by=pending.triggered_by,
        replica_index=0,
        retry_attempt=0,
        retry_of_run_id=None,
        params=pending.params,
        input_data=pending.input_data,
        external_execution_id=pending.external_execution_id,
    )
    store.apply([], [ended])
    assert store.get_run(pending.id) == ended
    back = replace(pending, description="reset")
    store.apply([], [back])
    assert store.get_run(pending.id) == back


def test_update_leaves_fields_fixed_at_insert(store: RunStore, make_run: MakeRun) -> None:
    pending = make_run("deploy", params={"a": "1"}, input_data=[[["x"]]])
    store.apply([pending], [])
    store.apply([], [replace(pending, params={}, input_data=None, status=RunStatus.RUNNING)])
    got = store.get_run(pending.id)
    assert got is not None
    assert (got.params, got.input_data, got.status) == ({"a": "1"}, [[["x"]]], RunStatus.RUNNING)


def test_insert_then_update_in_one_call(store: RunStore, make_run: MakeRun) -> None:
    run = make_run()
    running = replace(run, status=RunStatus.RUNNING, start_at=T0)
    store.apply([run], [running])
    assert store.get_run(run.id) == running


def test_get_run_unknown_is_none(store: RunStore, make_run: MakeRun) -> None:
    assert store.get_run(make_run().id) is None


def test_failed_apply_changes_nothing(store: RunStore, make_run: MakeRun) -> None:
    run = make_run()
    store.apply([run], [])
    fresh = make_run()
    with pytest.raises(StoreError):
        store.apply([fresh, run], [])  # duplicate id
    assert store.get_run(fresh.id) is None
    assert store.list_runs(RunQuery())[1] == 1


def test_naive_datetime_is_refused(store: RunStore, make_run: MakeRun) -> None:
    with pytest.raises(StoreError):
        store.apply([make_run(created_at=datetime(2025, 1, 1))], [])


def test_concurrent_writers(store: RunStore, make_run: MakeRun) -> None:
    errors: list[BaseException] = []

    def write(task: str) -> None:
        try:
            for _ in range(20):
                store.apply([make_run(task), make_run(task)], [])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"t{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.list_runs(RunQuery())[1] == 240
    assert store.task_names_with_runs() == [f"t{i}" for i in range(6)]


# --- listing --------------------------------------------------------------------


@pytest.mark.parametrize("task_name", [None, "backup"])
@pytest.mark.parametrize("direction", list(SortDirection))
@pytest.mark.parametrize("field", list(SortField))
def test_list_sorts(
    filled: tuple[RunStore, list[Run]],
    field: SortField,
    direction: SortDirection,
    task_name: str | None,
) -> None:
    store, runs = filled
    query = RunQuery(task_name=task_name, sort_field=field, sort_direction=direction)
    want = expected(runs, query)
    assert list_all(store, query) == (want, len(want))


@pytest.mark.parametrize(
    "query",
    [
        RunQuery(task_name="Report"),
        RunQuery(task_name="report"),
        RunQuery(task_name="nothing"),
        *(RunQuery(status=status) for status in RunStatus),
        *(RunQuery(end_reason=reason) for reason in EndReason),
        RunQuery(task_name="backup", status=RunStatus.ENDED),
        RunQuery(task_name="sync-db", end_reason=EndReason.FAILED),
        RunQuery(
            status=RunStatus.ENDED, end_reason=EndReason.TIMEOUT, sort_field=SortField.DURATION
        ),
        RunQuery(status=RunStatus.PENDING, end_reason=EndReason.FAILED),
    ],
    ids=repr,
)
def test_list_filters(filled: tuple[RunStore, list[Run]], query: RunQuery) -> None:
    store, runs = filled
    want = expected(runs, query)
    assert list_all(store, query) == (want, len(want))


@pytest.mark.parametrize("field", list(SortField))
@pytest.mark.parametrize("direction", list(SortDirection))
@pytest.mark.parametrize(
    "filters",
    [
        {"status": RunStatus.ENDED},
        {"end_reason": EndReason.FAILED},
        {"end_reason": EndReason.SKIPPED},
        {"status": RunStatus.PENDING},
        {"task_name": "backup", "status": RunStatus.ENDED},
    ],
    ids=repr,
)
def test_filtered_sorts_page_through_every_run(
    filled: tuple[RunStore, list[Run]],
    field: SortField,
    direction: SortDirection,
    filters: dict[str, Any],
) -> None:
    # Pages of 2 make the walk of the sort key's index the cheaper plan on
    # SQLite for the common filters (see run_list.should_walk_sort_index): both plans
    # must list the same runs in the same order.
    store, runs = filled
    query = RunQuery(sort_field=field, sort_direction=direction, limit=2, **filters)
    want = expected(runs, query)
    seen: list[str] = []
    for offset in range(0, len(want) + 2, 2):
        page, total = store.list_runs(replace(query, offset=offset))
        assert total == len(want)
        seen += [run.id for run in page]
    assert seen == want


@pytest.mark.parametrize(
    ("search", "column"),
    [
        ("REP", "task_name"),
        ("sync-", "task_name"),
        ("RUNN", "status"),
        ("timeO", "end_reason"),
        ("cRoN", "triggered_by"),
        ("cloud", "triggered_by"),
        ("EXEC-1", "external_execution_id"),
        ("%", "external_execution_id (literal %)"),
        ("_", "external_execution_id (literal _)"),
        ("\\x", "external_execution_id (literal backslash)"),
        ("no such thing", "nothing"),
    ],
)
def test_list_search(filled: tuple[RunStore, list[Run]], search: str, column: str) -> None:
    store, runs = filled
    for query in (RunQuery(search=search), RunQuery(search=search, task_name="backup")):
        want = expected(runs, query)
        assert list_all(store, query) == (want, len(want)), column
    if column != "nothing":
        assert expected(runs, RunQuery(search=search))


@pytest.mark.parametrize("case", ["upper", "lower"])
def test_list_search_by_id(filled: tuple[RunStore, list[Run]], case: str) -> None:
    store, runs = filled
    fragment = runs[7].id[-10:]
    fragment = fragment.upper() if case == "upper" else fragment.lower()
    assert list_all(store, RunQuery(search=fragment)) == ([runs[7].id], 1)


@pytest.mark.parametrize("field", list(SortField))
@pytest.mark.parametrize("direction", list(SortDirection))
def test_list_pages_do_not_overlap(
    filled: tuple[RunStore, list[Run]], field: SortField, direction: SortDirection
) -> None:
    store, runs = filled
    query = RunQuery(sort_field=field, sort_direction=direction, limit=7)
    seen: list[str] = []
    for offset in range(0, len(runs) + 7, 7):
        page, total = store.list_runs(replace(query, offset=offset))
        assert total == len(runs)
        assert len(page) == min(7, max(0, len(runs) - offset))
        seen += [run.id for run in page]
    assert seen == expected(runs, query)


def test_totals_follow_updates_and_deletes(filled: tuple[RunStore, list[Run]]) -> None:
    store, runs = filled
    by_id = {run.id: run for run in runs}
    changed = []
    for run in runs:
        if run.status is RunStatus.PENDING:
            changed.append(replace(run, status=RunStatus.RUNNING, start_at=T0))
        elif run.status is RunStatus.RUNNING:
            changed.append(
                replace(
                    run,
                    status=RunStatus.ENDED,
                    end_reason=EndReason.STOPPED,
                    end_at=T0 + timedelta(hours=1),
                    exit_code=-15,
                )
            )
        elif run.end_reason is EndReason.SKIPPED:
            changed.append(replace(run, description="same counters"))
    store.apply([], changed)
    by_id.update({run.id: run for run in changed})
    deleted = store.delete_expired("Report", keep_runs=2, ended_before=None)
    assert deleted
    for run_id in deleted:
        del by_id[run_id]
    current = list(by_id.values())

    queries = [
        RunQuery(),
        *(RunQuery(task_name=task) for task in TASKS),
        *(RunQuery(status=status) for status in RunStatus),
        *(RunQuery(end_reason=reason) for reason in EndReason),
        *(RunQuery(task_name=task, status=RunStatus.ENDED) for task in TASKS),
        RunQuery(task_name="Report", end_reason=EndReason.STOPPED),
        RunQuery(search="stopped"),
        RunQuery(search="report", status=RunStatus.RUNNING),
    ]
    for query in queries:
        want = expected(current, query)
        assert list_all(store, query) == (want, len(want)), query
        assert store.list_runs(replace(query, limit=1))[1] == len(want), query


def test_active_runs_are_oldest_first(filled: tuple[RunStore, list[Run]]) -> None:
    store, runs = filled
    active = [run for run in runs if run.status is not RunStatus.ENDED]
    want = sorted(active, key=lambda run: (run.created_at, run.id))
    assert store.active_runs() == want


def test_in_memory_sqlite_is_shared_by_threads(make_run: MakeRun) -> None:
    store = RunStore.open("sqlite://")
    try:
        threads = [
            threading.Thread(target=store.apply, args=([make_run(f"t{i}")], [])) for i in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.list_runs(RunQuery())[1] == 8
        assert len(store.active_runs()) == 8
    finally:
        store.close()


def test_active_run_by_secret_finds_only_runs_not_yet_ended(
    store: RunStore, make_run: MakeRun
) -> None:
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    older = make_run(created_at=t0, secret_hash="a" * 64)
    newer = make_run(status=RunStatus.RUNNING, created_at=t0 + timedelta(1), secret_hash="a" * 64)
    ended = make_run(
        status=RunStatus.ENDED,
        end_reason=EndReason.SUCCESS,
        created_at=t0 + timedelta(2),
        secret_hash="b" * 64,
    )
    store.apply([older, newer, ended], [])
    assert store.active_run_by_secret("a" * 64) == newer  # the newest of those sharing it
    assert store.active_run_by_secret("b" * 64) is None
    assert store.active_run_by_secret("c" * 64) is None


def test_a_page_and_its_total_agree_while_runs_are_inserted(
    store_url: str, make_run: MakeRun
) -> None:
    # Another store (as another connection of the daemon's would be) inserts
    # while this one lists: the page and its total come from one snapshot.
    reader, writer = RunStore.open(store_url), RunStore.open(store_url)
    done = threading.Event()

    def insert() -> None:
        for _ in range(900):  # fewer than a page holds: every page is the whole list
            if done.is_set():
                return
            writer.apply([make_run("flowing")], [])

    inserting = threading.Thread(target=insert)
    inserting.start()
    try:
        disagreements = []
        for _ in range(300):
            page, total = reader.list_runs(RunQuery(task_name="flowing", limit=1000))
            if total != len(page):
                disagreements.append((total, len(page)))
        assert disagreements == []
    finally:
        done.set()
        inserting.join()
        reader.close()
        writer.close()
