"""Create runs, run_counts, their indexes and the triggers that keep the counts.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Columns that may be NULL and are sort keys: NULLs sort as the smallest value
# on both databases, so PostgreSQL indexes say NULLS FIRST (SQLite's default).
_NULLABLE_SORT_KEYS = frozenset({"start_at", "duration_ms"})

# Every list query (sort field x direction, per task or global, filtered by
# status or end reason) walks one of these and stops after a page.
_INDEXES = {
    "ix_runs_task_created": ("task_name", "created_at", "id"),
    "ix_runs_task_start": ("task_name", "start_at", "id"),
    "ix_runs_task_exit": ("task_name", "exit_code", "id"),
    "ix_runs_task_duration": ("task_name", "duration_ms", "id"),
    "ix_runs_task_status": ("task_name", "status", "id"),
    "ix_runs_task_id": ("task_name", "id"),
    "ix_runs_created": ("created_at", "id"),
    "ix_runs_start": ("start_at", "id"),
    "ix_runs_exit": ("exit_code", "id"),
    "ix_runs_duration": ("duration_ms", "id"),
    "ix_runs_status": ("status", "id"),
    "ix_runs_status_created": ("status", "created_at", "id"),
    "ix_runs_end_reason_created": ("end_reason", "created_at", "id"),
    "ix_runs_task_status_created": ("task_name", "status", "created_at", "id"),
    "ix_runs_task_end_reason_created": ("task_name", "end_reason", "created_at", "id"),
}

_SQLITE_TRIGGERS = (
    """
    CREATE TRIGGER runs_count_insert AFTER INSERT ON runs BEGIN
        INSERT INTO run_counts (task_name, status, end_reason, count)
        VALUES (NEW.task_name, NEW.status, coalesce(NEW.end_reason, ''), 1)
        ON CONFLICT (task_name, status, end_reason) DO UPDATE SET count = count + 1;
    END
    """,
    """
    CREATE TRIGGER runs_count_delete AFTER DELETE ON runs BEGIN
        UPDATE run_counts SET count = count - 1
        WHERE task_name = OLD.task_name AND status = OLD.status
            AND end_reason = coalesce(OLD.end_reason, '');
    END
    """,
    """
    CREATE TRIGGER runs_count_update AFTER UPDATE OF task_name, status, end_reason ON runs
    WHEN OLD.task_name IS NOT NEW.task_name OR OLD.status IS NOT NEW.status
        OR OLD.end_reason IS NOT NEW.end_reason
    BEGIN
        UPDATE run_counts SET count = count - 1
        WHERE task_name = OLD.task_name AND status = OLD.status
            AND end_reason = coalesce(OLD.end_reason, '');
        INSERT INTO run_counts (task_name, status, end_reason, count)
        VALUES (NEW.task_name, NEW.status, coalesce(NEW.end_reason, ''), 1)
        ON CONFLICT (task_name, status, end_reason) DO UPDATE SET count = count + 1;
    END
    """,
)

# Inserts and deletes come in batches (group commit, retention): statement
# triggers count a whole batch at once. Updates are per row, and most do not
# touch the counted columns, which the row trigger's WHEN skips cheaply.
# Counters are touched in key order so concurrent transactions cannot deadlock.
_POSTGRESQL_TRIGGERS = (
    """
    CREATE FUNCTION runyard_count_inserted_runs() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO run_counts AS c (task_name, status, end_reason, count)
        SELECT task_name, status, coalesce(end_reason, ''), count(*)
        FROM new_runs GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (task_name, status, end_reason) DO UPDATE SET count = c.count + EXCLUDED.count;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION runyard_count_deleted_runs() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE run_counts AS c SET count = c.count - d.n
        FROM (
            SELECT task_name, status, coalesce(end_reason, '') AS end_reason, count(*) AS n
            FROM old_runs GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ) AS d
        WHERE c.task_name = d.task_name AND c.status = d.status AND c.end_reason = d.end_reason;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION runyard_recount_updated_run() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE run_counts SET count = count - 1
        WHERE task_name = OLD.task_name AND status = OLD.status
            AND end_reason = coalesce(OLD.end_reason, '');
        INSERT INTO run_counts AS c (task_name, status, end_reason, count)
        VALUES (NEW.task_name, NEW.status, coalesce(NEW.end_reason, ''), 1)
        ON CONFLICT (task_name, status, end_reason) DO UPDATE SET count = c.count + 1;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER runs_count_insert AFTER INSERT ON runs
    REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION runyard_count_inserted_runs()
    """,
    """
    CREATE TRIGGER runs_count_delete AFTER DELETE ON runs
    REFERENCING OLD TABLE AS old_runs
    FOR EACH STATEMENT EXECUTE FUNCTION runyard_count_deleted_runs()
    """,
    """
    CREATE TRIGGER runs_count_update AFTER UPDATE OF task_name, status, end_reason ON runs
    FOR EACH ROW WHEN (
        OLD.task_name IS DISTINCT FROM NEW.task_name OR OLD.status IS DISTINCT FROM NEW.status
        OR OLD.end_reason IS DISTINCT FROM NEW.end_reason
    ) EXECUTE FUNCTION runyard_recount_updated_run()
    """,
)

_POSTGRESQL_FUNCTIONS = (
    "runyard_count_inserted_runs",
    "runyard_count_deleted_runs",
    "runyard_recount_updated_run",
)


def _key(length: int) -> sa.types.TypeEngine[str]:
    # Bytewise ordering on PostgreSQL too, as on SQLite.
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _timestamp() -> sa.types.TypeEngine[datetime]:
    # Integer microseconds since the epoch on SQLite (see schema.UtcDateTime).
    return sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "runs",
        sa.Column("id", _key(26), primary_key=True),
        sa.Column("task_name", _key(100), nullable=False),
        sa.Column("status", _key(16), nullable=False),
        sa.Column("end_reason", _key(32), nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("start_at", _timestamp(), nullable=True),
        sa.Column("end_at", _timestamp(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger, nullable=True),
        sa.Column("replica_index", sa.Integer, nullable=False),
        sa.Column("retry_attempt", sa.Integer, nullable=False),
        sa.Column("retry_of_run_id", _key(26), nullable=True),
        sa.Column("triggered_by", _key(16), nullable=False),
        sa.Column(
            "external_execution_id",
            sa.Text().with_variant(sa.Text(collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("not_before", _timestamp(), nullable=True),
        sa.Column("input_data", sa.Text, nullable=True),
        sa.Column("output_data", sa.Text, nullable=True),
    )
    op.create_table(
        "run_counts",
        sa.Column("task_name", _key(100), primary_key=True),
        sa.Column("status", _key(16), primary_key=True),
        sa.Column("end_reason", _key(32), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    for name, columns in _INDEXES.items():
        op.create_index(
            name,
            "runs",
            [
                sa.text(f"{column} NULLS FIRST")
                if postgresql and column in _NULLABLE_SORT_KEYS
                else column
                for column in columns
            ],
        )
    for statement in _POSTGRESQL_TRIGGERS if postgresql else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("run_counts")
    if op.get_bind().dialect.name == "postgresql":
        for function in _POSTGRESQL_FUNCTIONS:
            op.execute(f"DROP FUNCTION {function}()")
