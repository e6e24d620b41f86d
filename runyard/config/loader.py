"""Find, read and check runyard.toml, reporting every problem at once."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from runyard.config.accounts import default_accounts, parse_accounts
from runyard.config.checks import (
    Problems,
    absolute_path,
    check_bool,
    check_duration,
    check_int,
    check_keys,
    check_size,
    check_str,
    check_table,
)
from runyard.config.schedules import parse_scheduler
from runyard.config.tasks import parse_defaults, parse_tasks
from runyard.domain.accounts import Account
from runyard.domain.models import TaskDefinition
from runyard.exceptions import ConfigError

CONFIG_ENV = "RUNYARD_CONFIG"
DATA_DIR_ENV = "RUNYARD_DATA_DIR"
DEFAULT_CONFIG_NAME = "runyard.toml"
DEFAULT_DATA_DIR_NAME = ".runyard"
EXAMPLE_CONFIG_PATH = Path(__file__).resolve().parent.parent / "examples" / "runyard.toml"

_SECTIONS = ("daemon", "scheduler", "defaults", "tasks", "accounts")
# Tables reserved for later features. They must be tables, but their contents
# are not validated yet: each feature checks its own table when it lands.
_RESERVED_SECTIONS = ("services", "storage")
_DAEMON_KEYS = (
    "host",
    "port",
    "data_dir",
    "max_concurrent_runs",
    "shutdown_timeout",
    "external_url",
    "max_request_size",
    "max_output_size",
    "max_connections",
    "header_timeout",
    "body_timeout",
    "max_uploads_per_client",
    "max_invalid_keys_per_minute",
    "access_log",
)
DEFAULT_MAX_REQUEST_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_OUTPUT_SIZE = 10 * 1024 * 1024
# Below this even a small trigger body or output table would be refused.
MIN_BODY_SIZE = 1024
_TOML_POSITION = re.compile(r"\s*\((at line \d+, column \d+|at end of document)\)$")


@dataclass(frozen=True)
class DaemonSettings:
    """The `[daemon]` table, with data_dir already resolved."""

    data_dir: Path  # absolute; not created by the loader
    host: str = "127.0.0.1"
    port: int = 9477
    max_concurrent_runs: int = 4  # account-wide limit on running runs
    shutdown_timeout: timedelta = timedelta(seconds=30)
    external_url: str | None = None
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE  # bytes of one HTTP request body
    max_output_size: int = DEFAULT_MAX_OUTPUT_SIZE  # bytes of output data one run may write
    # What a client without credentials may hold (README "Reliability").
    max_connections: int = 1024  # open HTTP connections
    header_timeout: timedelta = timedelta(seconds=10)  # to send a request line and headers
    body_timeout: timedelta = timedelta(seconds=30)  # to send a body (plus time per byte)
    max_uploads_per_client: int = 4  # bodies over 1 MiB one address sends at once
    max_invalid_keys_per_minute: int = 100  # v3 calls with a wrong key, per address
    access_log: bool = False  # one log line per HTTP request


@dataclass(frozen=True)
class Config:
    """A checked config file."""

    path: Path  # absolute path of the file read
    daemon: DaemonSettings
    tasks: dict[str, TaskDefinition]  # sorted by name
    warnings: tuple[str, ...] = ()
    accounts: dict[str, Account] = field(default_factory=default_accounts)  # sorted by id


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """Return the config file to read: --config, else RUNYARD_CONFIG, else ./runyard.toml."""
    chosen = cli_value or environ.get(CONFIG_ENV) or DEFAULT_CONFIG_NAME
    return absolute_path(Path.cwd(), chosen)


def load_config(
    path: Path,
    environ: Mapping[str, str] = os.environ,
    data_dir_override: str | None = None,
) -> Config:
    """Read and check the config file at `path`; raise ConfigError listing every problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), ["is a directory, not a file"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        # utf-8-sig: tolerate the byte-order mark some Windows editors write.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), [f"not UTF-8 text (invalid byte at offset {exc.start})"]
        ) from None
    return parse_config_text(text, path, environ, data_dir_override)


def parse_config_text(
    text: str,
    path: Path,
    environ: Mapping[str, str] = os.environ,
    data_dir_override: str | None = None,
) -> Config:
    """Check config `text` as if read from `path`; raise ConfigError listing every problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [_syntax_problem(exc)]) from None
    config_path = absolute_path(Path.cwd(), str(path))
    base_dir = config_path.parent
    problems = Problems()
    check_keys(document, "", (*_SECTIONS, *_RESERVED_SECTIONS), problems)
    for section in _RESERVED_SECTIONS:
        if section in document:
            check_table(document[section], section, problems)
    daemon = _parse_daemon(
        document.get("daemon", {}), base_dir, environ, data_dir_override, problems
    )
    default_timezone = parse_scheduler(document.get("scheduler", {}), environ, problems)
    defaults = parse_defaults(document.get("defaults", {}), problems)
    tasks = parse_tasks(document.get("tasks", {}), defaults, base_dir, problems, default_timezone)
    accounts = parse_accounts(document.get("accounts", {}), tasks, problems)
    if problems.errors or daemon is None:
        raise ConfigError(str(path), problems.errors)
    return Config(
        path=config_path,
        daemon=daemon,
        tasks=tasks,
        warnings=tuple(problems.warnings),
        accounts=accounts,
    )


def _syntax_problem(exc: tomllib.TOMLDecodeError) -> str:
    """Turn tomllib's `Message (at line 3, column 5)` into `TOML syntax error at ...`."""
    message = str(exc)
    match = _TOML_POSITION.search(message)
    if match is None:
        return f"TOML syntax error: {message}"
    return f"TOML syntax error {match.group(1)}: {message[: match.start()]}"


def _parse_daemon(
    value: object,
    base_dir: Path,
    environ: Mapping[str, str],
    data_dir_override: str | None,
    problems: Problems,
) -> DaemonSettings | None:
    table = check_table(value, "daemon", problems)
    if table is None:
        return None
    check_keys(table, "daemon", _DAEMON_KEYS, problems)
    before = len(problems)
    settings: dict[str, object] = {}
    if "host" in table:
        settings["host"] = check_str(table["host"], "daemon.host", problems, non_empty=True)
    if "port" in table:
        settings["port"] = check_int(table["port"], "daemon.port", problems, 1, 65535)
    if "max_concurrent_runs" in table:
        settings["max_concurrent_runs"] = check_int(
            table["max_concurrent_runs"], "daemon.max_concurrent_runs", problems, 1
        )
    if "shutdown_timeout" in table:
        settings["shutdown_timeout"] = check_duration(
            table["shutdown_timeout"], "daemon.shutdown_timeout", problems
        )
    if "external_url" in table:
        settings["external_url"] = check_str(table["external_url"], "daemon.external_url", problems)
    for key in ("max_request_size", "max_output_size"):
        if key in table:
            settings[key] = check_size(table[key], f"daemon.{key}", problems, MIN_BODY_SIZE)
    _parse_connection_settings(table, settings, problems)
    from_file: str | None = None
    if "data_dir" in table:
        from_file = check_str(table["data_dir"], "daemon.data_dir", problems, non_empty=True)
    if len(problems) > before:
        return None
    data_dir = _data_dir(base_dir, environ, data_dir_override, from_file)
    # Each value was checked against its field's type above; absent keys keep
    # the dataclass defaults.
    return DaemonSettings(data_dir=data_dir, **cast(dict[str, Any], settings))


def _parse_connection_settings(
    table: Mapping[str, object], settings: dict[str, object], problems: Problems
) -> None:
    for key, low in (
        ("max_connections", 1),
        ("max_uploads_per_client", 1),
        ("max_invalid_keys_per_minute", 1),
    ):
        if key in table:
            settings[key] = check_int(table[key], f"daemon.{key}", problems, low)
    for key in ("header_timeout", "body_timeout"):
        if key in table:
            settings[key] = check_duration(table[key], f"daemon.{key}", problems, positive=True)
    if "access_log" in table:
        settings["access_log"] = check_bool(table["access_log"], "daemon.access_log", problems)


def _data_dir(
    base_dir: Path,
    environ: Mapping[str, str],
    override: str | None,
    from_file: str | None,
) -> Path:
    """Return the data dir: --data-dir, else RUNYARD_DATA_DIR, else the file, else .runyard."""
    # The CLI flag and the variable come from the shell, so they are relative to
    # the cwd; the file's value is relative to the file, wherever it is run from.
    if override:
        return absolute_path(Path.cwd(), override)
    from_env = environ.get(DATA_DIR_ENV)
    if from_env:
        return absolute_path(Path.cwd(), from_env)
    if from_file:
        return absolute_path(base_dir, from_file)
    return base_dir / DEFAULT_DATA_DIR_NAME
