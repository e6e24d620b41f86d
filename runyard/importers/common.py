"""What every importer returns, and how it becomes runyard.toml."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import tomli_w


@dataclass(frozen=True)
class Skipped:
    """A line (or unit) left out of the config, or not fully honoured, and why."""

    line: int  # 1-based; 0 when the whole file is meant
    text: str
    reason: str


@dataclass
class Imported:
    # Task name -> its keys, in the order they are written.
    tasks: dict[str, dict[str, object]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    # Task name -> (line number, line) of what it came from.
    origins: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Service name -> its keys (supervisord's programs), and where each came from.
    services: dict[str, dict[str, object]] = field(default_factory=dict)
    service_origins: dict[str, tuple[int, str]] = field(default_factory=dict)

    def add(self, name: str, task: dict[str, object], line: int, text: str) -> None:
        self.tasks[name] = task
        self.origins[name] = (line, text)

    def add_service(self, name: str, service: dict[str, object], line: int, text: str) -> None:
        self.services[name] = service
        self.service_origins[name] = (line, text)

    def counted(self) -> str:
        """What was imported, counted: `3 tasks`, `1 service`, `2 tasks and 1 service`."""
        parts = [
            f"{len(units)} {kind}{'' if len(units) == 1 else 's'}"
            for kind, units in (("task", self.tasks), ("service", self.services))
            if units or (kind == "task" and not self.services)
        ]
        return " and ".join(parts)


def unique_name(taken: dict[str, dict[str, object]], base: str) -> str:
    """`base`, or `base-2`, `base-3`, ... whichever is free."""
    name = base
    number = 2
    while name in taken:
        name = f"{base}-{number}"
        number += 1
    return name


def keep_valid(result: Imported, check: Callable[[str], list[str]]) -> None:
    """Move to `skipped` every task in which `check(config_text)` finds problems.

    `check` is runyard's own config check (the caller's), so what is written
    is what `runyard validate` accepts.
    """
    for table, units, origins in (
        ("tasks", result.tasks, result.origins),
        ("services", result.services, result.service_origins),
    ):
        for name, unit in list(units.items()):
            problems = check(tomli_w.dumps({table: {name: unit}}))
            if problems:
                del units[name]
                number, raw = origins.pop(name)
                result.skipped.append(Skipped(number, raw, "; ".join(problems)))
    result.skipped.sort(key=lambda skipped: skipped.line)


def render_config(result: Imported, source: str, command: str) -> str:
    """The runyard.toml text of `result`; what was left out is listed at the top with why."""
    lines = [f"# Imported from {source} by `runyard {command}`."]
    if result.skipped:
        lines.append("# Not translated:")
        for skipped in result.skipped:
            where = f"line {skipped.line}: " if skipped.line else ""
            lines.append(f"#   {where}{skipped.text.strip()}")
            lines.append(f"#     {skipped.reason}")
    if not result.tasks and not result.services:
        lines.append("# Nothing to import.")
        return "\n".join(lines) + "\n"
    tables = {"tasks": result.tasks, "services": result.services}
    body = tomli_w.dumps({k: v for k, v in tables.items() if v}, multiline_strings=True)
    return "\n".join(lines) + "\n\n" + body
