"""Notifications: the messages routes produced and how their deliveries went.

Revision ID: 0008
Revises: 0006 (0007 is taken by work merged alongside; the merge re-chains
this revision after it)
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def _key(length: int) -> sa.types.TypeEngine[str]:
    # Bytewise ordering on PostgreSQL too, as on SQLite.
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _timestamp() -> sa.types.TypeEngine[datetime]:
    # Integer microseconds since the epoch on SQLite (see schema.UtcDateTime).
    return sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", _key(26), primary_key=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("kind", _key(32), nullable=False),
        sa.Column("task_name", _key(100), nullable=True),
        sa.Column("run_id", _key(26), nullable=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("notifiers", sa.Text, nullable=False),
        sa.Column("status", _key(16), nullable=False),
        sa.Column("deliveries", sa.Text, nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
    )
    # GET /api/notifications?status=failed, newest first.
    op.create_index("ix_notifications_status_id", "notifications", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_notifications_status_id", "notifications")
    op.drop_table("notifications")
