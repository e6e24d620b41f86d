"""The tables, as SQLAlchemy Core sees them (the migrations create them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Store an aware datetime as UTC; load it back as an aware UTC datetime.

    SQLite has no timestamp type: integer microseconds since the epoch sort
    chronologically and round-trip exactly. PostgreSQL gets timestamptz.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> object:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return sqlite_timestamp(value)
        return _aware(value).astimezone(UTC)

    def process_result_value(self, value: object, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        if isinstance(value, int):
            return _EPOCH + value * _MICROSECOND
        raise TypeError(f"unexpected timestamp value {value!r}")


def sqlite_timestamp(value: datetime) -> int:
    """Return how SQLite stores an aware datetime: integer microseconds since the epoch."""
    return (_aware(value) - _EPOCH) // _MICROSECOND


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} (runyard stores aware datetimes)")
    return value


def _key(length: int) -> sa.types.TypeEngine[str]:
    """Return a string type that sorts bytewise on every database, like SQLite does."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", _key(26), primary_key=True),
    sa.Column("task_name", _key(100), nullable=False),
    sa.Column("status", _key(16), nullable=False),
    sa.Column("end_reason", _key(32), nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("start_at", UtcDateTime, nullable=True),
    sa.Column("end_at", UtcDateTime, nullable=True),
    sa.Column("duration_ms", sa.BigInteger, nullable=True),
    sa.Column("replica_index", sa.Integer, nullable=False),
    sa.Column("retry_attempt", sa.Integer, nullable=False),
    sa.Column("retry_of_run_id", _key(26), nullable=True),
    sa.Column("triggered_by", _key(16), nullable=False),
    sa.Column(
        "external_execution_id", sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
    ),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("not_before", UtcDateTime, nullable=True),
    sa.Column("input_data", sa.Text, nullable=True),
    sa.Column("output_data", sa.Text, nullable=True),
    # Migration 0003: the v3 account that triggered the run, and the hash of
    # its viewer link's password.
    sa.Column("account", _key(64), nullable=True),
    sa.Column("secret_hash", _key(64), nullable=True),
    # Migration 0005: bytes of the run's input data as JSON (None: no input).
    # Large inputs live in files (store/inputs.py), not in input_data.
    sa.Column("input_size", sa.BigInteger, nullable=True),
    # Migration 0010: the node that admitted and started the run (PostgreSQL
    # with several daemons); NULL on SQLite and for runs from before.
    sa.Column("node", _key(100), nullable=True),
)

# Maintained by triggers on `runs` (see migrations): the list total without a
# COUNT(*) over every row. end_reason is '' for runs that have none, so the
# primary key can cover it.
run_counts = sa.Table(
    "run_counts",
    metadata,
    sa.Column("task_name", _key(100), primary_key=True),
    sa.Column("status", _key(16), primary_key=True),
    sa.Column("end_reason", _key(32), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

# Per-task scheduler state (migration 0002). last_tick: the most recent cron
# tick that fired or was accounted for; it only ever moves forward.
task_state = sa.Table(
    "task_state",
    metadata,
    sa.Column("task_name", _key(100), primary_key=True),
    sa.Column("last_tick", UtcDateTime, nullable=True),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# API keys of the v3 API (migration 0003). Only a hash of each key is kept;
# a revoked key keeps its row so `runyard keys list` can show it.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", _key(26), primary_key=True),
    sa.Column("account", _key(64), nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("key_hash", _key(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    # Migration 0006: when the key last opened the v3 API (to the minute).
    sa.Column("last_used_at", UtcDateTime, nullable=True),
)

# Notifications (migration 0008): every message the routes produced, newest
# first by id (a ULID), with how its deliveries went. `deliveries` is a JSON
# list of {notifier, url (password hidden), outcome, attempts, error}.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", _key(26), primary_key=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("kind", _key(32), nullable=False),
    sa.Column("task_name", _key(100), nullable=True),
    sa.Column("run_id", _key(26), nullable=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("notifiers", sa.Text, nullable=False),
    sa.Column("status", _key(16), nullable=False),
    sa.Column("deliveries", sa.Text, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# The node registry (migration 0010), PostgreSQL only: one row per daemon on
# the database. lease_renewed_at is the database server's now() at the last
# renewal; a node whose lease_renewed_at + lease_seconds has passed is dead.
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", _key(100), primary_key=True),
    sa.Column("instance", _key(26), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_renewed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_seconds", sa.Float, nullable=False),
    sa.Column("config_hash", _key(64), nullable=False),
    sa.Column("version", sa.Text, nullable=False),
)

# The cluster's shared secret (migration 0011), PostgreSQL only: one row (id
# 1) that the first node writes; nodes carry it when they ask each other for a
# run's log, live output or stop (runyard/cluster/client.py).
cluster_secret = sa.Table(
    "cluster_secret",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# The v3 API calls of the last minute per key (migration 0012), PostgreSQL
# only: one row per call allowed, `at` by the database server's clock, so
# nodes sharing the database share each key's rate limit (store/rate_limit.py).
# Index ix_v3_calls_key_at on (key_id, at).
v3_calls = sa.Table(
    "v3_calls",
    metadata,
    sa.Column("key_id", _key(26), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
