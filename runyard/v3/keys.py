"""The v3 accounts' API keys as a service: create, list and revoke; and their log lines.

One set of rules for both ways in: the REST routes under `/api/keys` (the
daemon, `runyard keys` while it runs) and `runyard keys` working on the
database directly when no daemon answers. Each key created or revoked is
logged on the `runyard.keys` logger: its id, its account and its label,
never the key itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from runyard.domain.accounts import Account, ApiKey, key_id_in
from runyard.exceptions import InvalidInput
from runyard.store.keys import KeyStore, mark_revoked

log = logging.getLogger("runyard.keys")


class KeyAdmin:
    """Create, list and revoke keys against one store and one config's accounts."""

    def __init__(
        self,
        keys: KeyStore,
        accounts: Callable[[], Mapping[str, Account]],
        config_path: Callable[[], Path],
        data_dir: Path,
    ) -> None:
        """`accounts` and `config_path` are read at each call: a reload may change them."""
        self._keys = keys
        self._accounts = accounts
        self._config_path = config_path
        self._data_dir = data_dir

    def create(self, account: str, label: str, now: datetime) -> tuple[ApiKey, str]:
        """Store a new key of a declared account; return it and its plaintext (shown once).

        Raise InvalidInput (location `body.account`) when the config declares no
        such account.
        """
        accounts = self._accounts()
        if account not in accounts:
            declared = ", ".join(accounts) or "none"
            raise InvalidInput(
                "body.account",
                f"account {account!r} is not declared in {self._config_path()} "
                f"(declared accounts: {declared})",
                account,
            )
        key, plaintext = self._keys.create(account, label, now)
        key_created(key.id, key.account, label)
        return key, plaintext

    def list(self) -> list[ApiKey]:
        """Return every key, revoked ones included, oldest first."""
        return self._keys.list()

    def revoke(self, key_ref: str, now: datetime) -> tuple[ApiKey, bool]:
        """Revoke a key, named by its id or by the key itself; return it and whether it was active.

        Raise NotFound when there is no such key. Daemons on the same data dir
        stop accepting it at once (the revocation marker), others within a second.
        """
        key = self._keys.revoke(key_id_in(key_ref) or key_ref, now)
        newly = key.revoked_at == now
        mark_revoked(self._data_dir)
        if newly:
            key_revoked(key.id, key.account)
        return key, newly


def key_created(key_id: str, account: str, label: str | None = None) -> None:
    """Log that a key of `account` was created."""
    labelled = f" ({label})" if label else ""
    log.info(
        "key %s%s created for account %s",
        key_id,
        labelled,
        account,
        extra={"key_id": key_id, "account": account, "label": label},
    )


def key_revoked(key_id: str, account: str | None = None) -> None:
    """Log that a key was revoked."""
    of = f" of account {account}" if account else ""
    log.info("key %s%s revoked", key_id, of, extra={"key_id": key_id, "account": account})
