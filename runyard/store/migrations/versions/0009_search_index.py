"""The run search's index: substring matches of run ids and external ids without a scan.

The run list's search is a case-insensitive substring match (store/search.py).
Run ids and external execution ids are matched row by row, so a search that
finds few runs read every run (half a second for a million). This index
finds the runs holding the text's three-letter pieces instead:

- SQLite: `runs_search`, an FTS5 table over the two columns with the trigram
  tokenizer (SQLite 3.34+). It holds the text lowered as SQLite's lower()
  does (ASCII letters only) and matches case-sensitively, so a phrase query
  of the lowered search text finds exactly the runs LIKE '%text%' finds
  (SQLite's LIKE ignores the case of ASCII letters only). Contentless: it
  keeps no copy of the text, only the index; its rowids are those of `runs`.
  Triggers keep it in step with every insert and delete of a run, and with
  updates of the two columns (the store never changes them).
- PostgreSQL: GIN trigram indexes (pg_trgm) on the two columns, which serve
  ILIKE '%text%' as they are.

Either may be out of reach: an SQLite built without FTS5, or a PostgreSQL
role that may not create the extension. The migration then logs a warning
and leaves the index out; searches scan as before.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import logging
import sqlite3

import sqlalchemy as sa
from alembic import op
from sqlalchemy.exc import DBAPIError

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

log = logging.getLogger("runyard.store")

_SQLITE_TABLE = """
CREATE VIRTUAL TABLE runs_search USING fts5(
    id, external_execution_id,
    content='', tokenize='trigram case_sensitive 1', columnsize=0
)
"""

_SQLITE_TRIGGERS = (
    """
    CREATE TRIGGER runs_search_insert AFTER INSERT ON runs BEGIN
        INSERT INTO runs_search (rowid, id, external_execution_id)
        VALUES (NEW.rowid, lower(NEW.id), lower(NEW.external_execution_id));
    END
    """,
    """
    CREATE TRIGGER runs_search_delete AFTER DELETE ON runs BEGIN
        INSERT INTO runs_search (runs_search, rowid, id, external_execution_id)
        VALUES ('delete', OLD.rowid, lower(OLD.id), lower(OLD.external_execution_id));
    END
    """,
    """
    CREATE TRIGGER runs_search_update AFTER UPDATE OF id, external_execution_id ON runs BEGIN
        INSERT INTO runs_search (runs_search, rowid, id, external_execution_id)
        VALUES ('delete', OLD.rowid, lower(OLD.id), lower(OLD.external_execution_id));
        INSERT INTO runs_search (rowid, id, external_execution_id)
        VALUES (NEW.rowid, lower(NEW.id), lower(NEW.external_execution_id));
    END
    """,
)

# Every stored run into the index, as the insert trigger would put it.
_SQLITE_BACKFILL = """
INSERT INTO runs_search (rowid, id, external_execution_id)
SELECT rowid, lower(id), lower(external_execution_id) FROM runs
"""

_POSTGRESQL_INDEXES = {
    "ix_runs_id_trgm": "id",
    "ix_runs_external_id_trgm": "external_execution_id",
}


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        _upgrade_postgresql(connection)
    else:
        _upgrade_sqlite(connection)


def _upgrade_sqlite(connection: sa.Connection) -> None:
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(_SQLITE_TABLE)
    except DBAPIError as exc:
        log.warning(
            "this SQLite (%s) cannot make the run search's index (FTS5 with the trigram"
            " tokenizer, SQLite 3.34+): %s; searches will read every run",
            sqlite3.sqlite_version,
            exc.orig,
        )
        return
    for statement in _SQLITE_TRIGGERS:
        connection.exec_driver_sql(statement)
    connection.exec_driver_sql(_SQLITE_BACKFILL)


def _upgrade_postgresql(connection: sa.Connection) -> None:
    try:
        with connection.begin_nested():
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            for name, column in _POSTGRESQL_INDEXES.items():
                connection.exec_driver_sql(
                    f"CREATE INDEX {name} ON runs USING gin ({column} gin_trgm_ops)"
                )
    except DBAPIError as exc:
        log.warning(
            "cannot make the run search's index (extension pg_trgm: CREATE EXTENSION"
            " pg_trgm needs a role allowed to create it, or a superuser to create it"
            " once in this database): %s; searches will read every run",
            str(exc.orig).strip().splitlines()[0],
        )


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        for name in _POSTGRESQL_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
        return  # the extension stays: other databases' objects may use it
    for trigger in ("runs_search_insert", "runs_search_delete", "runs_search_update"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS runs_search")
