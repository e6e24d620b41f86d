"""Where the database is, how to connect to it, and bringing its schema up to date."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool, StaticPool

from runyard.exceptions import StoreError
from runyard.store.files import SQLITE_DATABASE, create_private_file, make_private_directory

DATABASE_URL_ENV = "RUNYARD_DATABASE_URL"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Set on a Connection that is going to write: SQLite then begins with BEGIN
# IMMEDIATE, so the write lock is taken (waiting busy_timeout) before any read.
WRITE_OPTION = "runyard_write"

# Any constant: PostgreSQL sessions migrating at the same time queue on it.
_MIGRATION_LOCK_KEY = 0x72756E79617264

_POOL_SIZE = 5
# Sync API handlers run in a threadpool of 40 threads; let bursts borrow extra.
_MAX_OVERFLOW = 20


def database_url(data_dir: Path, environ: Mapping[str, str] = os.environ) -> str:
    """Return $RUNYARD_DATABASE_URL (PostgreSQL via psycopg 3), else SQLite in data_dir."""
    url = environ.get(DATABASE_URL_ENV, "").strip()
    if not url:
        return f"sqlite:///{data_dir / SQLITE_DATABASE}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Re-raise database driver errors as StoreError."""
    try:
        yield
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise StoreError(f"{action}: {exc}") from exc


def create_engine(url: str) -> Engine:
    """Return an engine for url, with runyard's connection settings."""
    with store_errors("bad database URL"):
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return sa.create_engine(
                parsed, pool_size=_POOL_SIZE, max_overflow=_MAX_OVERFLOW, pool_pre_ping=True
            )
        database = parsed.database or ""
        connect_args = {"check_same_thread": False}
        if database in ("", ":memory:"):
            # Every connection to :memory: would be a new empty database: share one.
            engine = sa.create_engine(parsed, poolclass=StaticPool, connect_args=connect_args)
        else:
            try:
                make_private_directory(Path(database).parent)
            except OSError as exc:
                raise StoreError(f"cannot create the database directory: {exc}") from exc
            if not database.startswith("file:"):  # a URI filename: SQLite's to parse
                with contextlib.suppress(OSError):  # SQLite reports what is wrong with the file
                    # SQLite would make it 0644 (less the umask), and its -wal and
                    # -shm files take the database file's mode: all of them 0600.
                    create_private_file(Path(database))
            engine = sa.create_engine(
                parsed,
                poolclass=QueuePool,
                pool_size=_POOL_SIZE,
                max_overflow=_MAX_OVERFLOW,
                connect_args=connect_args,
            )
    sa.event.listen(engine, "connect", _configure_sqlite)
    sa.event.listen(engine, "begin", _begin_sqlite)
    return engine


def is_shared_connection(engine: Engine) -> bool:
    """Tell whether every caller shares one connection (in-memory SQLite)."""
    return isinstance(engine.pool, StaticPool)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to revision (the latest by default), in one transaction."""
    config = Config()
    # Config values go through configparser interpolation.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    try:
        with engine.connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
    except (SQLAlchemyError, CommandError) as exc:
        raise StoreError(f"cannot migrate the database: {exc}") from exc


def _configure_sqlite(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    # Turn off pysqlite's own transaction handling: it only begins before
    # INSERT/UPDATE/DELETE, so reads and DDL would run outside transactions.
    # _begin_sqlite begins them instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in (
            "journal_mode=WAL",  # readers do not block the writer
            "synchronous=NORMAL",  # durable enough with WAL, far fewer fsyncs
            "busy_timeout=5000",
            "foreign_keys=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    write = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
