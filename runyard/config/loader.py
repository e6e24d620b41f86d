"""Find, read and check runyard.toml, reporting every problem at once."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from runyard.config.accounts import default_accounts, parse_accounts
from runyard.config.checks import Problems, key_path
from runyard.config.daemon import (
    DEFAULT_MAX_REQUEST_SIZE,
    MIN_BODY_SIZE,
    DaemonSettings,
    parse_daemon,
)
from runyard.config.include import Included, read_included
from runyard.config.interpolate import interpolate
from runyard.config.locate import (
    CONFIG_ENV,
    DATA_DIR_ENV,
    DEFAULT_CONFIG_NAME,
    DEFAULT_DATA_DIR_NAME,
    absolute_path,
    find_config,
)
from runyard.config.metrics import MetricsSettings, parse_metrics
from runyard.config.notifications import NotificationSettings, parse_notifications
from runyard.config.reading import parse_toml, read_config_text
from runyard.config.schedules import parse_scheduler
from runyard.config.services import parse_services
from runyard.config.tasks import parse_defaults, parse_tasks
from runyard.domain.accounts import Account
from runyard.domain.models import TaskDefinition
from runyard.domain.output_data import DEFAULT_MAX_OUTPUT_SIZE
from runyard.domain.services import ServiceDefinition
from runyard.exceptions import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DATA_DIR_ENV",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_DATA_DIR_NAME",
    "DEFAULT_MAX_OUTPUT_SIZE",
    "DEFAULT_MAX_REQUEST_SIZE",
    "EXAMPLE_CONFIG_PATH",
    "MIN_BODY_SIZE",
    "Config",
    "DaemonSettings",
    "load_config",
    "parse_config_text",
    "resolve_config_path",
]

EXAMPLE_CONFIG_PATH = Path(__file__).resolve().parent.parent / "examples" / "runyard.toml"

# The top-level tables a config may hold. Anything else is refused, so a
# misspelt or not-yet-supported table cannot validate as a config that runs
# nothing.
SECTIONS = (
    "daemon",
    "scheduler",
    "defaults",
    "tasks",
    "services",
    "accounts",
    "metrics",
    "notifications",
    "notifiers",
    "routes",
)
_TABLES_HINT = (
    "the tables are [daemon], [scheduler], [defaults], [tasks.<name>], [services.<name>], "
    "[accounts.<id>], [metrics], [notifications], [notifiers.<name>], [[routes]]"
)
# Tables a later version adds: named here so a config written for them is
# refused with a reason rather than a bare "unknown".
_NOT_YET: dict[str, str] = {}


@dataclass(frozen=True)
class Config:
    """A checked config file."""

    path: Path  # absolute path of the file read
    daemon: DaemonSettings
    tasks: dict[str, TaskDefinition]  # sorted by name
    warnings: tuple[str, ...] = ()
    accounts: dict[str, Account] = field(default_factory=default_accounts)  # sorted by id
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    services: dict[str, ServiceDefinition] = field(default_factory=dict)  # sorted by name


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """Return the config file to read: --config, else RUNYARD_CONFIG, else ./runyard.toml."""
    return find_config(cli_value, environ).path


def load_config(
    path: Path,
    environ: Mapping[str, str] = os.environ,
    data_dir_override: str | None = None,
    *,
    source: str = "",
) -> Config:
    """Read and check the config file at `path`; raise ConfigError listing every problem.

    `source` says which step of the lookup rule chose `path`, for the message
    when the file does not exist.
    """
    return parse_config_text(read_config_text(path, source), path, environ, data_dir_override)


def parse_config_text(
    text: str,
    path: Path,
    environ: Mapping[str, str] = os.environ,
    data_dir_override: str | None = None,
) -> Config:
    """Check config `text` as if read from `path`; raise ConfigError listing every problem."""
    document = parse_toml(text, path)
    config_path = absolute_path(Path.cwd(), str(path))
    base_dir = config_path.parent
    problems = Problems()
    document = cast(dict[str, object], interpolate(document, environ, problems))
    _check_sections(document, problems)
    daemon = parse_daemon(
        document.get("daemon", {}), config_path, environ, data_dir_override, problems
    )
    default_timezone = parse_scheduler(document.get("scheduler", {}), environ, problems)
    defaults = parse_defaults(document.get("defaults", {}), problems)
    tasks = parse_tasks(document.get("tasks", {}), defaults, base_dir, problems, default_timezone)
    if daemon is not None and daemon.include:
        included = read_included(daemon.include, config_path, environ, problems)
        tasks = _merge_included(document.get("tasks"), included, tasks, defaults, problems,
                                default_timezone)  # fmt: skip
    services = parse_services(document.get("services", {}), base_dir, tasks, problems)
    accounts = parse_accounts(document.get("accounts", {}), tasks, problems)
    notifications = parse_notifications(document, base_dir, tasks, problems, list(services))
    metrics = parse_metrics(document.get("metrics", {}), problems)
    if problems.errors or daemon is None:
        raise ConfigError(str(path), problems.errors)
    return Config(
        path=config_path,
        daemon=daemon,
        tasks=tasks,
        warnings=tuple(problems.warnings),
        accounts=accounts,
        notifications=notifications,
        metrics=metrics,
        services=services,
    )


def _merge_included(
    own: object,
    included: list[Included],
    tasks: dict[str, TaskDefinition],
    defaults: dict[str, object],
    problems: Problems,
    default_timezone: str,
) -> dict[str, TaskDefinition]:
    """Add the included files' tasks to `tasks`; a name defined twice names both files."""
    defined_in = {name: "the config file" for name in own} if isinstance(own, dict) else {}
    merged = dict(tasks)
    for file in included:
        if not isinstance(file.tasks, dict):
            problems.errors.append(f"{file.shown}: tasks: expected a table")
            continue
        own_problems = Problems()
        parsed = parse_tasks(file.tasks, defaults, file.path.parent, own_problems, default_timezone)
        problems.errors += [f"{file.shown}: {problem}" for problem in own_problems.errors]
        problems.warnings += [f"{file.shown}: {warning}" for warning in own_problems.warnings]
        for name in file.tasks:
            if name in defined_in:
                problems.add(
                    key_path("tasks", name), f"defined in both {defined_in[name]} and {file.shown}"
                )
                continue
            defined_in[name] = file.shown
            if name in parsed:
                merged[name] = parsed[name]
    return dict(sorted(merged.items()))


def _check_sections(document: dict[str, object], problems: Problems) -> None:
    """Report every top-level key that is not one of runyard's tables, with a suggestion."""
    for key, value in document.items():
        if key in SECTIONS:
            continue
        kind = "table" if isinstance(value, dict) else "key"
        close = difflib.get_close_matches(key, [*SECTIONS, *_NOT_YET], n=1)
        if close and close[0] in _NOT_YET:
            hint = _NOT_YET[close[0]]
        elif close:
            hint = f"did you mean [{close[0]}]?"
        else:
            hint = _TABLES_HINT
        problems.add(key_path("", key), f"unknown {kind}; {hint}")
