"""What a config reload changes: pure comparison of the old and new config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runyard.domain.models import TaskDefinition


@dataclass(frozen=True)
class TaskChanges:
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]


def diff_tasks(old: Mapping[str, TaskDefinition], new: Mapping[str, TaskDefinition]) -> TaskChanges:
    """Return which task names were added, removed, changed or kept as they were."""
    return TaskChanges(
        added=sorted(set(new) - set(old)),
        removed=sorted(set(old) - set(new)),
        changed=sorted(name for name in set(old) & set(new) if old[name] != new[name]),
        unchanged=sorted(name for name in set(old) & set(new) if old[name] == new[name]),
    )


RESTART_SETTINGS = (
    "host",
    "port",
    "data_dir",
    # Read once by the HTTP server when it starts.
    "max_connections",
    "header_timeout",
    "body_timeout",
    "access_log",
)


def settings_needing_restart(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """Return a line for each daemon setting that changed but applies only at restart."""
    return [
        f"daemon.{key}: {old[key]} -> {new[key]} (applies at the next restart)"
        for key in RESTART_SETTINGS
        if old.get(key) != new.get(key)
    ]
