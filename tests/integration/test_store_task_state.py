"""RunStore's per-task scheduler state: task_state, pausing and cron ticks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from runyard.domain.models import Run
from runyard.exceptions import StoreError
from runyard.store import RunStore, TaskState, database, database_url
from runyard.store._rows import run_to_row
from runyard.store.schema import runs

MakeRun = Callable[..., Run]

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


_ADDED_BY_0003 = ("account", "secret_hash", "input_size", "node")  # and 0005, 0010


def _engine(store_url: str) -> sa.Engine:
    return sa.create_engine(database_url(Path("."), {"RUNYARD_DATABASE_URL": store_url}))


def _version(store_url: str) -> list[str]:
    engine = _engine(store_url)
    try:
        with engine.connect() as connection:
            return list(
                connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()
            )
    finally:
        engine.dispose()


# --- migration -------------------------------------------------------------------


def test_migration_creates_task_state_on_fresh_database(store: RunStore, store_url: str) -> None:
    assert _version(store_url) == [database.HEAD_REVISION]
    engine = _engine(store_url)
    try:
        inspector = sa.inspect(engine)
        columns = {column["name"]: column for column in inspector.get_columns("task_state")}
        assert set(columns) == {"task_name", "last_tick", "paused", "updated_at"}
        assert columns["last_tick"]["nullable"]
        assert not columns["paused"]["nullable"]
        assert not columns["updated_at"]["nullable"]
        assert inspector.get_pk_constraint("task_state")["constrained_columns"] == ["task_name"]
    finally:
        engine.dispose()


def test_migration_0004_drops_the_index_on_viewer_secrets(store_url: str) -> None:
    engine = database.create_engine(store_url)
    try:
        database.migrate(engine, "0003")
        assert "ix_runs_secret_hash" in _index_names(engine)
        database.migrate(engine, "0004")
        names = _index_names(engine)
        assert "ix_runs_secret_hash" not in names
        assert "ix_runs_account_created" in names  # the other indexes of 0003 stay
    finally:
        engine.dispose()


def test_migration_0005_fills_input_size_with_the_bytes_of_stored_input(
    store_url: str, make_run: MakeRun
) -> None:
    """Runs stored before 0005 get input_size from their input_data, in bytes, not characters."""
    engine = database.create_engine(store_url)
    with_input = make_run(input_data=[[["é", "a"], ["ü", ""]]])
    without = make_run()
    try:
        database.migrate(engine, "0004")
        with engine.begin() as connection:
            for run in (with_input, without):
                row = {
                    key: value
                    for key, value in run_to_row(run).items()
                    if key not in ("input_size", "node")  # added by 0005 and 0010
                }
                connection.execute(sa.insert(runs).values(row))
        database.migrate(engine, "0005")
        with engine.connect() as connection:
            result = connection.execute(sa.select(runs.c.id, runs.c.input_size))
            sizes = {run_id: size for run_id, size in result}
    finally:
        engine.dispose()
    stored = run_to_row(with_input)["input_data"]
    assert sizes == {with_input.id: len(stored.encode("utf-8")), without.id: None}
    assert len(stored.encode("utf-8")) > len(stored)  # the test tells bytes from characters


def _index_names(engine: sa.Engine) -> set[str]:
    return {str(index["name"]) for index in sa.inspect(engine).get_indexes("runs")}


def test_migration_upgrades_database_at_0001_keeping_runs(
    store_url: str, make_run: MakeRun
) -> None:
    engine = database.create_engine(store_url)
    try:
        database.migrate(engine, "0001")
        run = make_run()
        # Written with the columns 0001 had: today's rows carry more (0003).
        row = {key: value for key, value in run_to_row(run).items() if key not in _ADDED_BY_0003}
        with engine.begin() as connection:
            connection.execute(sa.insert(runs).values(row))
        assert "task_state" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert _version(store_url) == ["0001"]

    store = RunStore.open(store_url)
    try:
        assert _version(store_url) == [database.HEAD_REVISION]
        assert store.get_run(run.id) == run
        assert store.task_states() == {}
        store.set_last_ticks({"backup": T0}, T0)
        assert store.task_states() == {"backup": TaskState("backup", T0, paused=False)}
    finally:
        store.close()


def test_paused_defaults_to_false_in_the_database(store: RunStore, store_url: str) -> None:
    engine = _engine(store_url)
    try:
        with engine.begin() as connection:
            # updated_at is integer microseconds on SQLite, timestamptz on PostgreSQL.
            updated = 0 if connection.dialect.name == "sqlite" else T0
            connection.execute(
                sa.text("INSERT INTO task_state (task_name, updated_at) VALUES ('x', :t)"),
                {"t": updated},
            )
    finally:
        engine.dispose()
    assert store.task_states() == {"x": TaskState("x", None, paused=False)}


# --- state -----------------------------------------------------------------------


def test_no_states_at_first(store: RunStore) -> None:
    assert store.task_states() == {}


def test_pause_then_resume_sets_last_tick_at_resume(store: RunStore) -> None:
    store.set_last_ticks({"backup": T0}, T0)

    paused = store.set_paused("backup", True, T0 + MINUTE)
    assert paused == TaskState("backup", T0, paused=True)
    assert store.task_states() == {"backup": paused}

    resumed = store.set_paused("backup", False, T0 + 10 * MINUTE)
    assert resumed == TaskState("backup", T0 + 10 * MINUTE, paused=False)
    assert store.task_states() == {"backup": resumed}


def test_pause_of_unknown_task_creates_it_without_tick(store: RunStore) -> None:
    assert store.set_paused("new", True, T0) == TaskState("new", None, paused=True)
    assert store.set_paused("new", True, T0 + MINUTE) == TaskState("new", None, paused=True)
    assert store.set_paused("new", False, T0 + 2 * MINUTE) == TaskState(
        "new", T0 + 2 * MINUTE, paused=False
    )


def test_resume_of_unknown_task_starts_it_now(store: RunStore) -> None:
    assert store.set_paused("new", False, T0) == TaskState("new", T0, paused=False)


def test_resume_of_running_task_keeps_its_last_tick(store: RunStore) -> None:
    # Nothing was paused, so no tick is excused: a due tick must still fire.
    store.set_last_ticks({"backup": T0}, T0)
    assert store.set_paused("backup", False, T0 + 5 * MINUTE) == TaskState(
        "backup", T0, paused=False
    )


def test_resume_never_moves_last_tick_back(store: RunStore) -> None:
    store.set_last_ticks({"backup": T0 + MINUTE}, T0)
    store.set_paused("backup", True, T0)
    assert store.set_paused("backup", False, T0) == TaskState("backup", T0 + MINUTE, False)


def test_set_last_ticks_never_goes_backwards(store: RunStore) -> None:
    store.set_last_ticks({"a": T0, "b": T0}, T0)
    store.set_last_ticks({"a": T0 + MINUTE, "b": T0 - MINUTE, "c": T0 - MINUTE}, T0 + MINUTE)
    store.set_last_ticks({"a": T0 + MINUTE}, T0 + 2 * MINUTE)
    assert store.task_states() == {
        "a": TaskState("a", T0 + MINUTE, False),
        "b": TaskState("b", T0, False),
        "c": TaskState("c", T0 - MINUTE, False),
    }
    store.set_last_ticks({}, T0)


def test_set_last_ticks_keeps_paused(store: RunStore) -> None:
    store.set_paused("backup", True, T0)
    store.set_last_ticks({"backup": T0 + MINUTE}, T0 + MINUTE)
    assert store.task_states() == {"backup": TaskState("backup", T0 + MINUTE, paused=True)}


def test_timestamps_round_trip_as_aware_utc(store: RunStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    tick = datetime(2025, 6, 30, 23, 59, 59, 999999, tzinfo=plus_two)
    store.set_last_ticks({"backup": tick}, tick)
    stored = store.task_states()["backup"].last_tick
    assert stored == tick
    assert stored is not None
    assert stored.tzinfo == UTC
    assert stored.utcoffset() == timedelta(0)
    assert stored == datetime(2025, 6, 30, 21, 59, 59, 999999, tzinfo=UTC)

    resumed = store.set_paused("other", False, tick)
    assert resumed.last_tick is not None and resumed.last_tick.tzinfo == UTC


def test_naive_datetimes_are_refused(store: RunStore) -> None:
    with pytest.raises(StoreError):
        store.set_last_ticks({"backup": datetime(2025, 1, 1)}, T0)  # noqa: DTZ001
    assert store.task_states() == {}


# --- apply -----------------------------------------------------------------------


def test_apply_records_ticks_with_runs(store: RunStore, make_run: MakeRun) -> None:
    run = make_run(task_name="backup")
    store.apply([run], [], {"backup": T0})
    assert store.get_run(run.id) == run
    assert store.task_states() == {"backup": TaskState("backup", T0, False)}

    store.apply([], [], {"backup": T0 - MINUTE, "report": T0})
    assert store.task_states() == {
        "backup": TaskState("backup", T0, False),
        "report": TaskState("report", T0, False),
    }
    store.apply([], [], None)
    store.apply([], [])


def test_apply_with_ticks_is_atomic_with_inserts(store: RunStore, make_run: MakeRun) -> None:
    first = make_run(task_name="backup")
    store.apply([first], [], {"backup": T0})

    fresh = make_run(task_name="backup")
    with pytest.raises(StoreError):
        # A duplicate run id fails the insert: the tick must not be recorded either.
        store.apply([fresh, first], [], {"backup": T0 + MINUTE, "report": T0 + MINUTE})
    assert store.task_states() == {"backup": TaskState("backup", T0, False)}
    assert store.get_run(fresh.id) is None
