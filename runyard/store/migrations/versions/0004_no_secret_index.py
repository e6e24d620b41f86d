"""Drop the index on runs.secret_hash: viewer passwords now name their run.

/stop finds a run by the id its password carries (the primary key), so the
index only served links issued before that. Its keys are random hashes: every
insert wrote into a random page of it, a quarter of the cost of recording a
triggered run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.drop_index("ix_runs_secret_hash", "runs")


def downgrade() -> None:
    op.create_index("ix_runs_secret_hash", "runs", ["secret_hash"])
