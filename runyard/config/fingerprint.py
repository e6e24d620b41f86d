"""A short hash of what a config makes a daemon do: nodes of a cluster compare theirs."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping

from runyard.config.loader import Config


def config_hash(config: Config) -> str:
    """Return a 16-hex-digit hash of the tasks, services, accounts and notifications.

    The `[daemon]` table is left out: each node has its own address, name and
    data dir. Two nodes with the same hash run the same tasks the same way.
    """
    shared = {
        "tasks": config.tasks,
        "services": config.services,
        "accounts": config.accounts,
        "notifications": config.notifications,
    }
    text = json.dumps(_plain(shared), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _plain(value: object) -> object:
    """Return `value` as JSON-able data whose text does not depend on the process."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, set | frozenset):
        # Set order follows string hashing, which differs from process to process.
        return sorted((_plain(item) for item in value), key=repr)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return f"{type(value).__name__}:{value}"
