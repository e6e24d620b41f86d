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
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool, StaticPool

from runyard.exceptions import DiskFull, StoreError, StoreUnavailable
from runyard.store.files import SQLITE_DATABASE, create_private_file, make_private_directory

DATABASE_URL_ENV = "RUNYARD_DATABASE_URL"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration's revision: a database already there needs no Alembic,
# whose import costs the daemon some 10 MB of memory for good. A test checks
# it against Alembic's own head, so a new migration cannot be forgotten here.
HEAD_REVISION = "0012"

# Set on a Connection that is going to write: SQLite then begins with BEGIN
# IMMEDIATE, so the write lock is taken (waiting busy_timeout) before any read.
WRITE_OPTION = "runyard_write"

# Any constant: PostgreSQL sessions migrating at the same time queue on it.
_MIGRATION_LOCK_KEY = 0x72756E79617264

_POOL_SIZE = 5
# Sync API handlers run in a threadpool of 40 threads; let bursts borrow extra.
_MAX_OVERFLOW = 20
# libpq waits forever for an unreachable host by default; a health check or a
# request must learn that the database is gone in bounded time.
_CONNECT_TIMEOUT_SECONDS = 5
# A connection whose peer went silent (a cut network, a machine gone) fails
# within about 15 s instead of the kernel's two hours: sent data unanswered
# for tcp_user_timeout, or an idle link whose keepalive probes go unanswered.
# A node learns it is cut off in bounded time, its lease renewals included.
_POSTGRES_CONNECT_ARGS = {
    "connect_timeout": _CONNECT_TIMEOUT_SECONDS,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,  # milliseconds
}

# SQLite primary result codes (the low byte of an extended code) that a later
# try can get past: another connection holds the lock, the disk is full or
# failing (the unix VFS reports ENOSPC as SQLITE_FULL).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_PROTOCOL = 5, 6, 10, 13, 15
_SQLITE_TRANSIENT = frozenset({_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_PROTOCOL})

# PostgreSQL SQLSTATEs (whole classes by their first two characters) that a
# later try can get past. Other codes, such as 22 (data exception: a NUL in
# text) or 54 (a value over a limit), fail the same way every time.
_PG_DISK_FULL = "53100"
_PG_TRANSIENT_CLASSES = frozenset(
    {
        "08",  # connection exception
        "53",  # insufficient resources: disk full, out of memory, too many connections
        "57",  # operator intervention: shutdown, restart, "the database system is starting up"
        "58",  # system error: I/O error
    }
)
_PG_TRANSIENT_CODES = frozenset(
    {
        "40001",  # serialization failure
        "40P01",  # deadlock detected
        "55P03",  # lock not available
        "25006",  # read-only transaction: a standby being promoted
    }
)


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
    """Re-raise database driver errors as StoreError, StoreUnavailable or DiskFull."""
    try:
        yield
    except (SQLAlchemyError, sqlite3.Error, UnicodeError) as exc:
        raise classify(exc, action) from exc


def classify(exc: BaseException, action: str, *, maybe_committed: bool = False) -> StoreError:
    """Return the runyard error for a driver error: transient ones are StoreUnavailable.

    `maybe_committed`: the error came from a COMMIT, so the transaction may
    have landed. Only a server across a connection leaves that in doubt:
    SQLite reports the outcome of its own commit.
    """
    original = _original(exc)
    message = f"{action}: {_first_line(original)}"
    sqlite_code = getattr(original, "sqlite_errorcode", None)
    if isinstance(original, sqlite3.Error):
        primary = -1 if sqlite_code is None else sqlite_code & 0xFF
        if primary == _SQLITE_FULL:
            return DiskFull(message)
        if primary in _SQLITE_TRANSIENT:
            return StoreUnavailable(message)
        return StoreError(message)
    in_doubt = maybe_committed and _transient_server_error(exc, original)
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate == _PG_DISK_FULL:
        return DiskFull(message, maybe_committed=in_doubt)
    if _transient_server_error(exc, original):
        return StoreUnavailable(message, maybe_committed=in_doubt)
    return StoreError(message)


def _transient_server_error(exc: BaseException, original: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True  # SQLAlchemy saw the connection drop
    if isinstance(exc, (sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True  # the pool had no connection to give in time
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate is None:
        # No SQLSTATE: the server never answered (refused, reset, closed).
        return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
    return sqlstate[:2] in _PG_TRANSIENT_CLASSES or sqlstate in _PG_TRANSIENT_CODES


def _original(exc: BaseException) -> BaseException:
    """Return the driver's exception that SQLAlchemy wrapped, or exc itself."""
    if isinstance(exc, sa_exc.StatementError) and isinstance(exc.orig, BaseException):
        return exc.orig
    return exc


def _first_line(original: BaseException) -> str:
    # SQLAlchemy's own messages append the statement and its parameters (input
    # data, maybe megabytes): only the driver's words are worth keeping.
    text = str(original).strip() or type(original).__name__
    return text.splitlines()[0]


def create_engine(url: str) -> Engine:
    """Return an engine for url, with runyard's connection settings."""
    with store_errors("bad database URL"):
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend != "sqlite":
            return sa.create_engine(
                parsed,
                pool_size=_POOL_SIZE,
                max_overflow=_MAX_OVERFLOW,
                pool_pre_ping=True,
                connect_args=dict(_POSTGRES_CONNECT_ARGS) if backend == "postgresql" else {},
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
    if revision == "head" and current_revision(engine) == HEAD_REVISION:
        return  # up to date: nothing to apply, and Alembic is not even imported
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

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


def current_revision(engine: Engine) -> str | None:
    """The revision the database's schema is at, as Alembic recorded it; None if none or unknown."""
    try:
        with engine.connect() as connection, connection.begin():
            versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            found = [row[0] for row in versions]
    except SQLAlchemyError:
        return None  # no such table yet (a new database), or it cannot be read: migrate
    return found[0] if len(found) == 1 else None


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


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite database URL ("" for an in-memory one); None for any other database."""
    parsed = make_url(url)
    return parsed.database or "" if parsed.get_backend_name() == "sqlite" else None


def shown_database_url(url: str) -> str:
    """Return `url` fit for a log: its password replaced by `***`."""
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError):
        return "<unparseable database URL>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)
