"""The dashboard's read queries (store/dashboard.py) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from runyard.domain.models import FAILURE_LIKE, EndReason, Run, RunStatus, TriggeredBy
from runyard.domain.queries import RunQuery, SortDirection
from runyard.store import RunStore, database
from runyard.store import dashboard as reads
from runyard.store.keys import KeyStore

MakeRun = Callable[..., Run]
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def _ended(make_run: MakeRun, task: str, minutes: int, reason: EndReason, **fields: object) -> Run:
    return make_run(
        task,
        RunStatus.ENDED,
        T0 + timedelta(minutes=minutes),
        end_reason=reason,
        start_at=T0 + timedelta(minutes=minutes),
        end_at=T0 + timedelta(minutes=minutes, seconds=3),
        **fields,
    )


def test_counts_by_phase_and_by_end_reason_in_a_window(store: RunStore, make_run: MakeRun) -> None:
    store.apply(
        [
            make_run("a", RunStatus.PENDING, T0),
            make_run("a", RunStatus.RUNNING, T0),
            make_run("b", RunStatus.RUNNING, T0),
            _ended(make_run, "a", -60 * 48, EndReason.FAILED),  # outside a 24 h window
            _ended(make_run, "a", 1, EndReason.FAILED),
            _ended(make_run, "b", 2, EndReason.TIMEOUT),
            _ended(make_run, "b", 3, EndReason.SUCCESS),
            _ended(make_run, "b", 4, EndReason.STOPPED),
        ],
        [],
    )
    assert reads.status_counts(store) == {"pending": 1, "running": 2, "ended": 5}
    counts = reads.end_reason_counts_since(
        store, [EndReason.SUCCESS, *FAILURE_LIKE], T0 - timedelta(hours=24)
    )
    assert counts["failed"] == 1 and counts["timeout"] == 1 and counts["success"] == 1
    assert sum(counts.values()) == 3  # stopped is neither a success nor a failure


def test_recent_runs_newest_first_per_task_and_overall(store: RunStore, make_run: MakeRun) -> None:
    runs = [_ended(make_run, task, i, EndReason.SUCCESS) for i in range(6) for task in "ab"]
    store.apply(runs, [])
    recent = reads.recent_runs_of_tasks(store, ["a", "b", "none"], 3)
    assert [run.created_at for run in recent["a"]] == [T0 + timedelta(minutes=m) for m in (5, 4, 3)]
    assert recent["none"] == []
    overall = reads.recent_runs(store, 4)
    assert len(overall) == 4 and overall[0].created_at == T0 + timedelta(minutes=5)
    assert {run.id for run in reads.runs_by_ids(store, [runs[0].id, runs[1].id])} == {
        runs[0].id,
        runs[1].id,
    }


def test_retries_of_a_run_oldest_first(store: RunStore, make_run: MakeRun) -> None:
    first = _ended(make_run, "a", 0, EndReason.FAILED)
    second = _ended(make_run, "a", 1, EndReason.FAILED, retry_attempt=1, retry_of_run_id=first.id)
    third = _ended(make_run, "a", 2, EndReason.SUCCESS, retry_attempt=2, retry_of_run_id=second.id)
    store.apply([first, second, third, _ended(make_run, "a", 3, EndReason.SUCCESS)], [])
    assert [run.id for run in reads.retries_of(store, first.id)] == [second.id]
    assert [run.id for run in reads.retries_of(store, second.id)] == [third.id]
    assert reads.retries_of(store, third.id) == []


def test_active_runs_of_an_account(store: RunStore, make_run: MakeRun) -> None:
    store.apply(
        [
            make_run("a", RunStatus.PENDING, T0, account="partner"),
            make_run("a", RunStatus.RUNNING, T0, account="partner"),
            make_run("a", RunStatus.RUNNING, T0, account="other"),
            _ended(make_run, "a", 1, EndReason.SUCCESS, account="partner"),
        ],
        [],
    )
    assert reads.active_count_of_account(store, "partner") == {"pending": 1, "running": 1}


def test_key_last_used_moves_forward_only(store: RunStore) -> None:
    keys = KeyStore(store.transaction)
    key, _plaintext = keys.create("default", "", T0)
    unused, _ = keys.create("default", "", T0)
    assert reads.key_last_used(store) == {}
    keys.touch(key.id, T0 + timedelta(minutes=5))
    keys.touch(key.id, T0 + timedelta(minutes=1))  # an older stamp never wins
    assert reads.key_last_used(store) == {key.id: T0 + timedelta(minutes=5)}
    assert unused.id not in reads.key_last_used(store)


def test_filtered_runs_by_trigger_and_creation_day_with_a_capped_total(
    store: RunStore, make_run: MakeRun
) -> None:
    runs = [
        _ended(
            make_run,
            "a",
            i * 60 * 12,  # two runs a day
            EndReason.SUCCESS,
            triggered_by=TriggeredBy.CRON if i % 2 else TriggeredBy.API,
        )
        for i in range(10)
    ]
    store.apply(runs, [])
    page, total, capped = reads.filtered_runs(
        store,
        RunQuery(limit=2),
        triggered_by="cron",
        created_from=None,
        created_before=None,
        count_cap=100,
    )
    assert (total, capped) == (5, False)
    assert [run.triggered_by for run in page] == [TriggeredBy.CRON] * 2
    assert page[0].created_at > page[1].created_at
    page, total, capped = reads.filtered_runs(
        store,
        RunQuery(sort_direction=SortDirection.ASC),
        triggered_by=None,
        created_from=T0 + timedelta(days=1),
        created_before=T0 + timedelta(days=3),
        count_cap=100,
    )
    assert total == 4 and [run.created_at for run in page] == [
        T0 + timedelta(hours=h) for h in (24, 36, 48, 60)
    ]
    _page, total, capped = reads.filtered_runs(
        store,
        RunQuery(task_name="a"),
        triggered_by="api",
        created_from=None,
        created_before=None,
        count_cap=3,
    )
    assert (total, capped) == (3, True)


def test_migration_0006_adds_the_retry_index_and_last_used_keeping_keys(store_url: str) -> None:
    engine = database.create_engine(store_url)
    try:
        database.migrate(engine, "0004")
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO api_keys (id, account, label, key_hash, created_at) "
                "VALUES ('01ARZ3NDEKTSV4RRFFQ69G5FAV', 'default', 'old', 'hash', "
                + ("0" if engine.dialect.name == "sqlite" else "now()")
                + ")"
            )
        database.migrate(engine)
        inspector = sa.inspect(engine)
        assert "ix_runs_retry_of" in {index["name"] for index in inspector.get_indexes("runs")}
        assert "last_used_at" in {column["name"] for column in inspector.get_columns("api_keys")}
    finally:
        engine.dispose()
    store = RunStore.open(store_url)
    try:
        assert [key.label for key in KeyStore(store.transaction).list()] == ["old"]
        assert reads.key_last_used(store) == {}
    finally:
        store.close()
