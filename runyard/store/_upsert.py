"""INSERT ... ON CONFLICT, in the dialect of the database at hand."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def conflict_insert(connection: Connection, table: sa.Table) -> Any:
    """Return an INSERT into `table` that can take ON CONFLICT, for this database.

    Each dialect's module is imported here, on first use: SQLAlchemy's
    PostgreSQL dialect (with its drivers' modules) costs a daemon on SQLite
    2 MB of memory it never uses.
    """
    name = connection.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for database {name!r}")
