"""KeyStore: the API keys of the v3 accounts, kept as hashes only."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from ulid import ULID

from runyard.domain.accounts import KEY_PREFIX, ApiKey, hash_secret, key_plaintext
from runyard.exceptions import NotFound
from runyard.store.files import PRIVATE_FILE_MODE, make_private_directory
from runyard.store.schema import api_keys

# Touched by `runyard keys revoke`: a daemon using the same data dir drops the
# keys it trusts from memory when this file changes, so revocation is immediate.
REVOKED_MARKER = "keys.revoked"

__all__ = ["KEY_PREFIX", "REVOKED_MARKER", "KeyStore", "mark_revoked", "revoked_stamp"]

_KEY_BYTES = 32  # 256 random bits

_COLUMNS = (
    api_keys.c.id,
    api_keys.c.account,
    api_keys.c.label,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)


class KeyStore:
    """Create, list, revoke and look up API keys; safe to call from any thread."""

    def __init__(self, transaction: Callable[..., AbstractContextManager[Connection]]) -> None:
        """Use `transaction(write=...)`, the RunStore's, for every statement."""
        self._transaction = transaction

    def create(self, account: str, label: str, now: datetime) -> tuple[ApiKey, str]:
        """Store a new key of `account`; return it and its plaintext, never to be seen again."""
        key = ApiKey(id=str(ULID.from_datetime(now)), account=account, label=label, created_at=now)
        plaintext = key_plaintext(key.id, secrets.token_urlsafe(_KEY_BYTES))
        with self._transaction(write=True) as connection:
            connection.execute(
                sa.insert(api_keys).values(
                    id=key.id,
                    account=key.account,
                    label=key.label,
                    key_hash=hash_secret(plaintext),
                    created_at=key.created_at,
                    revoked_at=None,
                )
            )
        return key, plaintext

    def list(self) -> list[ApiKey]:
        """Return every key, revoked ones included, oldest first."""
        statement = sa.select(*_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
        with self._transaction() as connection:
            rows = connection.execute(statement).mappings().all()
        return [_row_to_key(row) for row in rows]

    def revoke(self, key_id: str, now: datetime) -> ApiKey:
        """Revoke the key with this id and return it; raise NotFound when there is none.

        Revoking a revoked key changes nothing: it keeps its first revoked_at.
        """
        with self._transaction(write=True) as connection:
            connection.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = (
                connection.execute(sa.select(*_COLUMNS).where(api_keys.c.id == key_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound("key", key_id)
        return _row_to_key(row)

    def lookup(self, plaintext: str) -> ApiKey | None:
        """Return the active key whose plaintext this is, or None (unknown or revoked)."""
        statement = sa.select(*_COLUMNS).where(
            api_keys.c.key_hash == hash_secret(plaintext), api_keys.c.revoked_at.is_(None)
        )
        with self._transaction() as connection:
            row = connection.execute(statement).mappings().first()
        return None if row is None else _row_to_key(row)

    def touch(self, key_id: str, now: datetime) -> None:
        """Record that the key with this id was used at `now` (never moves back)."""
        with self._transaction(write=True) as connection:
            connection.execute(
                sa.update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now),
                )
                .values(last_used_at=now)
            )


def _row_to_key(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"],
        account=row["account"],
        label=row["label"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def mark_revoked(data_dir: Path) -> None:
    """Tell daemons using `data_dir` that a key was revoked."""
    make_private_directory(data_dir)
    marker = data_dir / REVOKED_MARKER
    marker.touch(PRIVATE_FILE_MODE)
    # Two revocations within the file system's timestamp step must still differ.
    with marker.open("a", encoding="utf-8") as handle:
        handle.write(".")


def revoked_stamp(data_dir: Path) -> tuple[int, int]:
    """Return what changes whenever `mark_revoked` runs: (mtime, size) of the marker."""
    try:
        # os.stat on a joined string: this runs on every v3 call.
        status = os.stat(os.path.join(data_dir, REVOKED_MARKER))
    except FileNotFoundError:
        return (0, 0)
    return (status.st_mtime_ns, status.st_size)
