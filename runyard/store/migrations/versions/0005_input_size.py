"""Add runs.input_size: the bytes of a run's input data, which may now live in a file.

Large input data is kept in a file of the data dir instead of the run's row
(store/inputs.py); the row keeps its size, which the per-task and per-account
caps on queued input (max_queued_input) add up. Existing runs keep their input
in input_data; their size is filled in here, by the database itself, so no
row is read into Python.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("input_size", sa.BigInteger, nullable=True))
    # Bytes of the UTF-8 text: length() of a BLOB on SQLite, octet_length on PostgreSQL.
    size = (
        "octet_length(input_data)"
        if op.get_bind().dialect.name == "postgresql"
        else "length(CAST(input_data AS BLOB))"
    )
    op.execute(f"UPDATE runs SET input_size = {size} WHERE input_data IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("input_size")
