"""Add `cluster_secret`: the credential nodes present to each other (README "Several nodes").

One row (id 1), written by the first node that starts on the database with
256 random bits and read by every node at start. A node asks another for a
run's log, live output or stop on behalf of its caller (whose credential,
a dashboard session or the node's own token, is good on the node asked
only), and carries this secret instead; a node accepts it on those
endpoints alone. Anyone who can read the database could read it, and
could do far more than that already. SQLite keeps one daemon: the table
stays empty there.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_secret",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cluster_secret")
