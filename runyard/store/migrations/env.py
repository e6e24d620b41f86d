"""Alembic environment: migrate the connection runyard.store.database.migrate passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection


def _run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run runyard migrations through runyard.store.database.migrate()")
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


_run_migrations()
