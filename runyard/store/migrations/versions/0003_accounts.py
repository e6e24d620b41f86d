"""Accounts of the v3 API: runs.account, runs.secret_hash and the api_keys table.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _key(length: int) -> sa.types.TypeEngine[str]:
    # Bytewise ordering on PostgreSQL too, as on SQLite.
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _timestamp() -> sa.types.TypeEngine[datetime]:
    # Integer microseconds since the epoch on SQLite (see schema.UtcDateTime).
    return sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: a batch (table copy) on SQLite would
    # drop the counting triggers of 0001.
    op.add_column("runs", sa.Column("account", _key(64), nullable=True))
    op.add_column("runs", sa.Column("secret_hash", _key(64), nullable=True))
    # /run-reports (newest first), /run-data (newest of one task), the runtime
    # sum (runs that ended inside the period, runs running now) and /stop by secret.
    op.create_index("ix_runs_account_created", "runs", ["account", "created_at", "id"])
    op.create_index(
        "ix_runs_account_task_created", "runs", ["account", "task_name", "created_at", "id"]
    )
    op.create_index("ix_runs_account_end", "runs", ["account", "end_at"])
    op.create_index("ix_runs_account_status", "runs", ["account", "status"])
    op.create_index("ix_runs_secret_hash", "runs", ["secret_hash"])
    op.create_table(
        "api_keys",
        sa.Column("id", _key(26), primary_key=True),
        sa.Column("account", _key(64), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("key_hash", _key(64), nullable=False, unique=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("revoked_at", _timestamp(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_runs_secret_hash", "runs")
    op.drop_index("ix_runs_account_status", "runs")
    op.drop_index("ix_runs_account_end", "runs")
    op.drop_index("ix_runs_account_task_created", "runs")
    op.drop_index("ix_runs_account_created", "runs")
    # SQLite 3.35+ drops columns in place, so the counting triggers survive.
    op.drop_column("runs", "secret_hash")
    op.drop_column("runs", "account")
