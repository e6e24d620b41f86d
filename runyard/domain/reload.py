"""What a config reload changes: pure comparison of the old and new config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
    # Registered once, when the daemon joins the cluster.
    "node_name",
    "node_lease",
)


def settings_needing_restart(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """Return a line for each daemon setting that changed but applies only at restart."""
    return [
        f"daemon.{key}: {old[key]} -> {new[key]} (applies at the next restart)"
        for key in RESTART_SETTINGS
        if old.get(key) != new.get(key)
    ]


@dataclass(frozen=True)
class ReloadOutcome:
    """What a successful reload changed; every list is empty when nothing did.

    The API body, the dashboard's report and the daemon log all show this one
    value; `log_lines` is the daemon log's wording.
    """

    added: list[str] = field(default_factory=list)  # task names
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # tasks whose definition changed
    restart_required: list[str] = field(default_factory=list)  # settings_needing_restart lines
    warnings: list[str] = field(default_factory=list)  # about the new config
    skipped_runs: list[str] = field(default_factory=list)  # queued runs of removed tasks
    accounts_changed: list[str] = field(default_factory=list)  # v3 accounts
    services_added: list[str] = field(default_factory=list)  # started
    services_removed: list[str] = field(default_factory=list)  # stopped
    services_changed: list[str] = field(default_factory=list)  # restarted

    def log_lines(self) -> list[str]:
        """Return the log lines that say what the reload changed."""
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if names
        ]
        lines = [f"reload: {'; '.join(parts) if parts else 'no task changed'}"]
        services = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("started", self.services_added),
                ("stopped", self.services_removed),
                ("restarted", self.services_changed),
            )
            if names
        ]
        if services:
            lines.append(f"reload: services {'; '.join(services)}")
        if self.accounts_changed:
            lines.append(f"reload: accounts changed: {', '.join(self.accounts_changed)}")
        lines += [f"reload: restart required: {line}" for line in self.restart_required]
        lines += [f"reload: warning: {line}" for line in self.warnings]
        if self.skipped_runs:
            lines.append(
                f"reload: skipped queued runs of removed tasks: {', '.join(self.skipped_runs)}"
            )
        return lines
