"""Add the node registry (`nodes`) and runs.node: several daemons on one PostgreSQL.

Every daemon whose database is PostgreSQL is a node: it keeps a row here and
renews its lease (lease_renewed_at, stamped with the database server's clock,
so nodes whose clocks disagree still agree on who has expired). runs.node
names the node that admitted and started a run, so a node's recovery takes
only its own runs and those of nodes whose lease expired. SQLite keeps one
daemon per data dir: the table stays empty and runs.node NULL there.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def _key(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", _key(100), primary_key=True),
        # A new id at each daemon start: a renewal by a daemon whose row was
        # taken over (recovered, or re-registered by its successor) finds no row.
        sa.Column("instance", _key(26), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_seconds", sa.Float, nullable=False),
        sa.Column("config_hash", _key(64), nullable=False),
        sa.Column("version", sa.Text, nullable=False),
    )
    op.add_column("runs", sa.Column("node", _key(100), nullable=True))
    # Recovery asks for one node's active runs; a partial index stays small
    # (only pending and running runs are in it).
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_runs_node_active",
            "runs",
            ["node"],
            postgresql_where=sa.text("status IN ('pending', 'running')"),
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_runs_node_active", table_name="runs")
    # No batch copy of runs on SQLite: recreating the table would drop its
    # triggers (run_counts, the search index). DROP COLUMN is native there.
    op.drop_column("runs", "node")
    op.drop_table("nodes")
