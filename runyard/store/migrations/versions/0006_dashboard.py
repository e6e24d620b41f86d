"""What the dashboard reads: retry lineage by index, and when each API key was last used.

- `ix_runs_retry_of`: a run's page links the attempts that retried it; the
  index holds only retries (partial), so ordinary runs cost nothing to insert.
- `api_keys.last_used_at`: the Accounts page shows when each key last opened
  the v3 API (written at most once a minute per key).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op


def _timestamp() -> sa.types.TypeEngine[datetime]:
    # Integer microseconds since the epoch on SQLite (see schema.UtcDateTime).
    return sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    condition = sa.text("retry_of_run_id IS NOT NULL")
    op.create_index(
        "ix_runs_retry_of",
        "runs",
        ["retry_of_run_id"],
        sqlite_where=condition,
        postgresql_where=condition,
    )
    # Plain ADD COLUMN: nothing to copy.
    op.add_column("api_keys", sa.Column("last_used_at", _timestamp(), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "last_used_at")
    op.drop_index("ix_runs_retry_of", "runs")
