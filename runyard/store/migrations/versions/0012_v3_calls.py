"""Add `v3_calls`: the v3 API calls of the last minute per key, counted across nodes.

Several daemons on one PostgreSQL count each key's calls here, so a key's
`rate_limit_per_minute` holds for the cluster rather than for each node
(store/rate_limit.py). One row per call allowed, stamped with the database
server's clock; rows older than the window are deleted as calls go. SQLite
keeps one daemon, which counts in its own memory: the table stays empty there.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def _key(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "v3_calls",
        sa.Column("key_id", _key(26), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    # A key's calls newest first: what each call deletes, counts and reads.
    op.create_index("ix_v3_calls_key_at", "v3_calls", ["key_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_v3_calls_key_at", table_name="v3_calls")
    op.drop_table("v3_calls")
