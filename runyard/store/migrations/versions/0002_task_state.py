"""Create task_state: per-task scheduler state (last cron tick, paused).

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
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
        "task_state",
        sa.Column("task_name", _key(100), primary_key=True),
        sa.Column("last_tick", _timestamp(), nullable=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", _timestamp(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_state")
