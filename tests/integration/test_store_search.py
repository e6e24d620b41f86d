"""The run search through its index (migration 0009, store/search.py) on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from ulid import ULID

from runyard.domain.models import EndReason, Run, RunStatus, TriggeredBy
from runyard.domain.queries import RunQuery, SortDirection, SortField
from runyard.store import RunStore, database
from runyard.store._rows import run_to_row
from runyard.store.schema import runs as runs_table

MakeRun = Callable[..., Run]
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TASKS = ("alpha", "Beta-Sync", "gamma")


def _history(make_run: MakeRun, count: int = 240) -> list[Run]:
    """Runs over three tasks, every fourth with an external id, some not started (NULL keys)."""
    runs = []
    for i in range(count):
        created = T0 + timedelta(minutes=i // 2)  # pairs share created_at
        fields: dict[str, object] = {
            "triggered_by": (TriggeredBy.CRON, TriggeredBy.API, TriggeredBy.CLOUD)[i % 3],
            "external_execution_id": f"Ext-{i:04d}-Übung" if i % 4 == 0 else None,
        }
        if i % 7 == 0:
            status = RunStatus.PENDING
        elif i % 97 == 1:
            status = RunStatus.RUNNING
            fields["start_at"] = created
        else:
            status = RunStatus.ENDED
            reason = EndReason.CRASHED if i % 50 == 3 else EndReason.SUCCESS
            fields.update(
                end_reason=reason,
                exit_code=0 if reason is EndReason.SUCCESS else -2,
                start_at=created,
                end_at=created + timedelta(seconds=i % 11),
            )
        run = make_run(TASKS[i % 3], status, created, **fields)
        # Ids of their own time and randomness: ids made in one burst share
        # all but their last characters.
        runs.append(replace(run, id=str(ULID.from_timestamp(created.timestamp() + i))))
    runs.append(make_run("odd", RunStatus.PENDING, T0, external_execution_id='50%_off\\x "quoted"'))
    return runs


def _matches(run: Run, text: str) -> bool:
    folded = "".join(char.lower() if char.isascii() else char for char in text)
    values = (
        run.id,
        run.task_name,
        run.status.value,
        run.end_reason.value if run.end_reason else None,
        run.triggered_by.value,
        run.external_execution_id,
    )
    return any(
        folded in "".join(char.lower() if char.isascii() else char for char in value)
        for value in values
        if value
    )


def _expected(runs: list[Run], query: RunQuery) -> list[str]:
    """The ids `query` lists: NULLs smallest, ties by id in the same direction."""
    field = {
        SortField.CREATED_AT: lambda run: run.created_at,
        SortField.DURATION: lambda run: run.duration_ms,
        SortField.TASK_NAME: lambda run: run.task_name,
    }[query.sort_field]
    kept = [
        run
        for run in runs
        if _matches(run, query.search or "")
        and (query.task_name is None or run.task_name == query.task_name)
        and (query.status is None or run.status is query.status)
    ]

    def key(run: Run) -> tuple[tuple[object, ...], str]:
        value = field(run)
        return ((0,) if value is None else (1, value)), run.id

    kept.sort(key=key, reverse=query.sort_direction is SortDirection.DESC)
    return [run.id for run in kept]


def _paged(store: RunStore, query: RunQuery, size: int) -> tuple[list[str], set[int]]:
    """Every page of `query`, `size` runs at a time: the ids in order, and the totals seen."""
    ids: list[str] = []
    totals: set[int] = set()
    offset = 0
    while True:
        page, total = store.list_runs(replace(query, limit=size, offset=offset))
        totals.add(total)
        ids += [run.id for run in page]
        if len(page) < size:
            return ids, totals
        offset += size


def _texts(runs: list[Run]) -> list[str]:
    some = runs[37].id
    return [
        some[9:17].lower(),  # the middle of a run id, in the other case
        some[-3:],  # three characters: the shortest the index looks up
        "xt-00",  # the middle of external ids
        "Übung",  # not ASCII: its case counts (LIKE folds ASCII letters only)
        "übung",
        '"quoted"',
        "%_off\\",
        "eta-sy",  # the middle of a task name
        "crash",  # an end reason (few runs)
        "endin",  # a status (most runs)
        "cloud",  # a trigger
        "no such thing",
        "Ex",  # two characters: searched row by row
    ]


def test_search_finds_substrings_anywhere_in_every_searched_column(
    store: RunStore, make_run: MakeRun
) -> None:
    runs = _history(make_run)
    store.apply(runs, [])
    for text in _texts(runs):
        for query in (
            RunQuery(search=text),
            RunQuery(search=text, task_name="alpha"),
            RunQuery(search=text, status=RunStatus.ENDED),
            RunQuery(search=text, sort_field=SortField.DURATION, sort_direction=SortDirection.ASC),
            RunQuery(search=text, sort_field=SortField.TASK_NAME),
        ):
            want = _expected(runs, query)
            # Pages of 3 and of 1000: the few matches are read by id and sorted,
            # the many by walking the sort key's index; both list the same runs.
            for size in (3, 1000):
                assert _paged(store, query, size) == (want, {len(want)}), (text, query, size)
    assert _expected(runs, RunQuery(search=runs[37].id[9:17].lower())) == [runs[37].id]
    assert len(_expected(runs, RunQuery(search="xt-00"))) == 25
    assert len(_expected(runs, RunQuery(search="Übung"))) == 60
    assert _expected(runs, RunQuery(search="übung")) == []


def test_search_reads_the_index_when_few_runs_match(store: RunStore, make_run: MakeRun) -> None:
    runs = _history(make_run)
    store.apply(runs, [])
    page, _count = store.list_statements(RunQuery(search=runs[5].id[10:20]))
    sql = str(
        page.compile(dialect=store._engine.dialect, compile_kwargs={"render_postcompile": True})
    )
    if store._engine.dialect.name == "sqlite":
        assert "runs_search MATCH" in sql
    else:
        assert "ILIKE" in sql
    assert " IN (SELECT " in sql  # the page's runs are read by key, not by a walk


def _sqlite_index_count(store: RunStore, text: str) -> int:
    with store._engine.connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT count(*) FROM runs_search WHERE runs_search MATCH :text"),
                {"text": '"' + text.lower() + '"'},
            ).scalar_one()
        )


def _sqlite_integrity(store: RunStore) -> None:
    with store._engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO runs_search (runs_search) VALUES ('integrity-check')"
        )


def _ids(store: RunStore, text: str) -> set[str]:
    page, total = store.list_runs(RunQuery(search=text, limit=1000))
    assert total == len(page)
    return {run.id for run in page}


def test_the_index_follows_inserts_updates_deletes_and_retention(
    store: RunStore, make_run: MakeRun
) -> None:
    runs = _history(make_run, 60)
    store.apply(runs[:30], [])
    sqlite = store._engine.dialect.name == "sqlite"
    assert _ids(store, runs[40].id[12:]) == set()
    store.apply(runs[30:], [])  # a later batch
    assert _ids(store, runs[40].id[12:]) == {runs[40].id}
    assert _ids(store, runs[3].id[8:16].lower()) == {runs[3].id}

    # Lifecycle updates (the store's only updates) leave the text as it was.
    pending = [run for run in runs if run.status is RunStatus.PENDING and run.task_name == "gamma"]
    ended = [
        replace(run, status=RunStatus.ENDED, end_reason=EndReason.STOPPED, end_at=T0, exit_code=143)
        for run in pending
    ]
    store.apply([], ended)
    assert _ids(store, "stopped") == {run.id for run in ended}
    assert _ids(store, pending[0].id[5:]) == {pending[0].id}

    # An external id changed behind the store's back: the index follows it too.
    changed = runs[8]
    with store._engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE runs SET external_execution_id = 'Renamed-XYZ' WHERE id = :id"),
            {"id": changed.id},
        )
    assert _ids(store, "ext-0008") == set()
    assert _ids(store, "med-xy") == {changed.id}

    # Deleted behind the store's back, and by retention.
    with store._engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM runs WHERE id = :id"), {"id": runs[40].id})
    assert _ids(store, runs[40].id[12:]) == set()
    deleted = set(store.delete_expired("alpha", keep_runs=3, ended_before=None))
    assert deleted
    for run in runs:
        found = _ids(store, run.id[6:])
        assert found == (set() if run.id in deleted or run is runs[40] else {run.id})
    if sqlite:
        for run_id in (*deleted, runs[40].id):
            assert _sqlite_index_count(store, run_id) == 0
        kept = next(run for run in runs if run.id not in deleted and run is not runs[40])
        assert _sqlite_index_count(store, kept.id) == 1
        _sqlite_integrity(store)


def _alembic(engine: sa.Engine, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(database.MIGRATIONS_DIR).replace("%", "%%"))
    with engine.connect() as connection:
        connection.execution_options(**{database.WRITE_OPTION: True})
        with connection.begin():
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)


def _index_names(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            statement = "SELECT name FROM sqlite_master WHERE name LIKE 'runs_search%%'"
        else:
            statement = "SELECT indexname FROM pg_indexes WHERE indexname LIKE '%%trgm'"
        return set(connection.exec_driver_sql(statement).scalars())


def _store_without_node(engine: sa.Engine, stored: list[Run]) -> None:
    """Insert runs into a database older than migration 0010 (no runs.node)."""
    rows = [{k: v for k, v in run_to_row(run).items() if k != "node"} for run in stored]
    with engine.begin() as connection:
        connection.execute(sa.insert(runs_table), rows)


def test_migration_0009_indexes_stored_runs_and_downgrades(
    store_url: str, make_run: MakeRun
) -> None:
    runs = _history(make_run, 40)
    engine = database.create_engine(store_url)
    try:
        database.migrate(engine, "0008")
        _store_without_node(engine, runs[:20])  # runs stored before the index
        database.migrate(engine)
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            assert {"runs_search", "runs_search_insert", "runs_search_delete"} <= _index_names(
                engine
            )
        else:
            assert _index_names(engine) == {"ix_runs_id_trgm", "ix_runs_external_id_trgm"}
        store = RunStore(engine)
        assert _ids(store, runs[7].id[9:19].lower()) == {runs[7].id}
        assert len(_ids(store, "xt-00")) == 5
        if sqlite:
            assert _sqlite_index_count(store, runs[7].id) == 1
            _sqlite_integrity(store)

        _alembic(engine, "downgrade", "0008")
        assert _index_names(engine) == set()
        # Today's store reads runs.node (0010): lend it the column while it
        # searches without the index.
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE runs ADD COLUMN node VARCHAR(100)")
        downgraded = RunStore(engine)  # asks anew whether the index is there
        _store_without_node(engine, runs[20:])  # no trigger left behind to fail
        assert _ids(downgraded, runs[30].id[9:19].lower()) == {runs[30].id}
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE runs DROP COLUMN node")

        database.migrate(engine)  # up again: the runs stored meanwhile are indexed
        upgraded = RunStore(engine)
        assert _ids(upgraded, runs[30].id[9:19].lower()) == {runs[30].id}
        assert len(_ids(upgraded, "xt-00")) == 10
        if sqlite:
            _sqlite_integrity(upgraded)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_without_pg_trgm_the_migration_warns_and_search_scans(
    postgres_database: str, make_run: MakeRun, caplog: pytest.LogCaptureFixture
) -> None:
    """A role that may not create extensions: migration 0009 leaves the index out."""
    server = sa.make_url(
        database.database_url(Path("."), {"RUNYARD_DATABASE_URL": postgres_database})
    )
    name = f"runyard_noext_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
            # Owned by the superuser: the role has no CREATE on the database,
            # which a trusted extension such as pg_trgm needs.
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        owner = sa.create_engine(server.set(database=name), isolation_level="AUTOCOMMIT")
        try:
            with owner.connect() as connection:
                connection.exec_driver_sql(f'GRANT USAGE, CREATE ON SCHEMA public TO "{name}"')
        finally:
            owner.dispose()
        url = server.set(database=name, username=name).render_as_string(hide_password=False)
        with caplog.at_level(logging.WARNING, logger="runyard.store"):
            store = RunStore.open(url)
        try:
            assert "pg_trgm" in caplog.text
            assert _index_names(store._engine) == set()
            runs = _history(make_run, 20)
            store.apply(runs, [])
            assert _ids(store, runs[7].id[9:19].lower()) == {runs[7].id}
            assert len(_ids(store, "xt-00")) == 5
        finally:
            store.close()
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
        admin.dispose()
