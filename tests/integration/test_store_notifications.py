"""The notifications table on SQLite and PostgreSQL: insert, update, pages, filter, trim."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from ulid import ULID

from runyard.domain.models import EndReason
from runyard.domain.notifications import Delivery, Notification
from runyard.store import RunStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def notification(index: int, status: str = "pending") -> Notification:
    return Notification(
        id=str(ULID.from_timestamp(T0.timestamp() + index)),
        created_at=T0 + timedelta(seconds=index),
        kind="failed",
        task_name=f"task{index}",
        run_id=str(ULID()),
        count=1,
        title=f"runyard: task{index} failed (exit 1)",
        body="Task: ...\n    ünïcode line",
        notifiers=("ops", "mail"),
        status=status,
        updated_at=T0 + timedelta(seconds=index),
    )


def test_a_notification_round_trips_and_its_deliveries_are_updated(store: RunStore) -> None:
    kept = notification(0)
    store.insert_notification(kept)
    assert store.list_notifications(None, 10, 0) == ([kept], 1)
    done = dataclasses.replace(
        kept,
        status="failed",
        deliveries=(
            Delivery("ops", "json://hooks.example.com/runyard", "delivered", 1, ""),
            Delivery("mail", "mailto://u:****@mail.example.com", "failed", 9, "refused"),
        ),
        updated_at=T0 + timedelta(minutes=5),
    )
    store.update_notification(done)
    assert store.list_notifications(None, 10, 0) == ([done], 1)


def test_pages_are_newest_first_and_the_status_filter_counts_alike(store: RunStore) -> None:
    for index in range(7):
        store.insert_notification(notification(index, "failed" if index % 3 == 0 else "delivered"))
    page, total = store.list_notifications(None, 3, 2)
    assert total == 7
    assert [n.task_name for n in page] == ["task4", "task3", "task2"]
    failed, total = store.list_notifications("failed", 10, 0)
    assert total == 3
    assert [n.task_name for n in failed] == ["task6", "task3", "task0"]
    assert store.list_notifications("dropped", 10, 0) == ([], 0)


def test_trim_keeps_the_newest(store: RunStore) -> None:
    for index in range(5):
        store.insert_notification(notification(index))
    assert store.trim_notifications(keep=2) == 3
    assert [n.task_name for n in store.list_notifications(None, 10, 0)[0]] == ["task4", "task3"]
    assert store.trim_notifications(keep=2) == 0


def test_last_judged_end_finds_the_newest_matching_run(store: RunStore, make_run) -> None:  # type: ignore[no-untyped-def]
    reasons = ["failed", "success"]
    assert store.last_judged_end("sync", reasons) is None
    runs = [
        make_run("sync", created_at=T0, end_reason=EndReason.SUCCESS),
        make_run("sync", created_at=T0 + timedelta(seconds=1), end_reason=EndReason.FAILED),
        make_run("sync", created_at=T0 + timedelta(seconds=2), end_reason=EndReason.SKIPPED),
        make_run("other", created_at=T0 + timedelta(seconds=3), end_reason=EndReason.SUCCESS),
    ]
    store.apply(runs, [])
    assert store.last_judged_end("sync", reasons) == "failed"
