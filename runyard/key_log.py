"""The daemon log's line per API key created or revoked (logger `runyard.keys`).

Never the key itself: only its id, its account and its label.
"""

from __future__ import annotations

import logging

log = logging.getLogger("runyard.keys")


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
