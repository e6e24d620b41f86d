"""The notifications table: in-app notifications and their delivery outcomes."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from runyard.domain.notifications import Delivery, Notification
from runyard.store.schema import notifications

# Rows kept: older notifications are deleted as new ones come in.
KEEP_NOTIFICATIONS = 10_000


def insert(connection: Connection, notification: Notification) -> None:
    """Store a new notification."""
    connection.execute(notifications.insert().values(**_to_row(notification)))


def update(connection: Connection, notification: Notification) -> None:
    """Store a notification's status and deliveries."""
    row = _to_row(notification)
    connection.execute(
        notifications.update()
        .where(notifications.c.id == notification.id)
        .values(
            status=row["status"],
            deliveries=row["deliveries"],
            updated_at=row["updated_at"],
        )
    )


def page(
    connection: Connection, status: str | None, limit: int, offset: int
) -> tuple[list[Notification], int]:
    """Return one page of notifications, newest first, and how many match in all."""
    where = [] if status is None else [notifications.c.status == status]
    rows = connection.execute(
        sa.select(notifications)
        .where(*where)
        .order_by(notifications.c.id.desc())
        .limit(limit)
        .offset(offset)
    ).mappings()
    found = [_from_row(row) for row in rows]
    total = connection.execute(
        sa.select(sa.func.count()).select_from(notifications).where(*where)
    ).scalar_one()
    return found, int(total)


def trim(connection: Connection, keep: int = KEEP_NOTIFICATIONS) -> int:
    """Delete all but the newest `keep` notifications; return how many went."""
    cutoff = connection.execute(
        sa.select(notifications.c.id).order_by(notifications.c.id.desc()).offset(keep).limit(1)
    ).scalar_one_or_none()
    if cutoff is None:
        return 0
    result = connection.execute(notifications.delete().where(notifications.c.id <= cutoff))
    return int(result.rowcount or 0)


def _to_row(notification: Notification) -> dict[str, Any]:
    return {
        "id": notification.id,
        "created_at": notification.created_at,
        "kind": notification.kind,
        "task_name": notification.task_name,
        "run_id": notification.run_id,
        "count": notification.count,
        "title": notification.title,
        "body": notification.body,
        "notifiers": json.dumps(list(notification.notifiers)),
        "status": notification.status,
        "deliveries": json.dumps(
            [
                {
                    "notifier": delivery.notifier,
                    "url": delivery.url,
                    "outcome": delivery.outcome,
                    "attempts": delivery.attempts,
                    "error": delivery.error,
                }
                for delivery in notification.deliveries
            ]
        ),
        "updated_at": notification.updated_at or notification.created_at,
    }


def _from_row(row: RowMapping) -> Notification:
    return Notification(
        id=row["id"],
        created_at=row["created_at"],
        kind=row["kind"],
        task_name=row["task_name"],
        run_id=row["run_id"],
        count=row["count"],
        title=row["title"],
        body=row["body"],
        notifiers=tuple(json.loads(row["notifiers"])),
        status=row["status"],
        deliveries=tuple(Delivery(**item) for item in json.loads(row["deliveries"])),
        updated_at=row["updated_at"],
    )
