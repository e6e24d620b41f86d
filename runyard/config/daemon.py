"""The `[daemon]` table: where the daemon listens, keeps its data, and its limits.

Kept apart from the task checks so that a CLI command, which needs only the
daemon's address and data dir, reads just this table (`read_daemon_settings`)
without importing the cron parser and the task checks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from runyard.config.checks import (
    Problems,
    check_bool,
    check_duration,
    check_int,
    check_keys,
    check_size,
    check_str,
    check_table,
)
from runyard.config.include import check_include
from runyard.config.interpolate import interpolate
from runyard.config.locate import Located, find_data_dir
from runyard.config.reading import parse_toml, read_config_text
from runyard.domain.output_data import DEFAULT_MAX_OUTPUT_SIZE
from runyard.exceptions import ConfigError

DAEMON_KEYS = (
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
    "include",
    "node_name",
    "node_lease",
)
DEFAULT_MAX_REQUEST_SIZE = 10 * 1024 * 1024
# Below this even a small trigger body or output table would be refused.
MIN_BODY_SIZE = 1024
# A node name: letters, digits and . _ : - (the default is host:port).
NODE_NAME_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"
# A lease shorter than this would expire under an ordinary database hiccup;
# longer than this leaves a dead node's runs looking alive for too long.
MIN_NODE_LEASE = timedelta(seconds=1)
MAX_NODE_LEASE = timedelta(hours=1)


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
    include: tuple[str, ...] = ()  # globs of more task files, relative to the config
    # Several daemons on one PostgreSQL (README "Several nodes"): this one's
    # name (None: host:port) and how long its lease lasts unrenewed.
    node_name: str | None = None
    node_lease: timedelta = timedelta(seconds=15)
    # Which step of the lookup rule chose data_dir, for messages; not a setting.
    data_dir_source: str = field(default="", compare=False)


def parse_daemon(
    value: object,
    config_path: Path,
    environ: Mapping[str, str],
    data_dir_override: str | None,
    problems: Problems,
) -> DaemonSettings | None:
    """Return the checked `[daemon]` table of the file at `config_path` (absolute)."""
    table = check_table(value, "daemon", problems)
    if table is None:
        return None
    check_keys(table, "daemon", DAEMON_KEYS, problems)
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
    if "include" in table:
        settings["include"] = check_include(table["include"], problems)
    _parse_node_settings(table, settings, problems)
    from_file: str | None = None
    if "data_dir" in table:
        from_file = check_str(table["data_dir"], "daemon.data_dir", problems, non_empty=True)
    if len(problems) > before:
        return None
    data_dir: Located = find_data_dir(data_dir_override, environ, config_path, from_file)
    # Each value was checked against its field's type above; absent keys keep
    # the dataclass defaults.
    return DaemonSettings(
        data_dir=data_dir.path,
        data_dir_source=data_dir.source,
        **cast(dict[str, Any], settings),
    )


def _parse_node_settings(
    table: Mapping[str, object], settings: dict[str, object], problems: Problems
) -> None:
    if "node_name" in table:
        name = check_str(table["node_name"], "daemon.node_name", problems, non_empty=True)
        if name is not None and not re.fullmatch(NODE_NAME_PATTERN, name):
            problems.add(
                "daemon.node_name",
                f"must be 1 to 100 letters, digits or . _ : - characters, got {name!r}",
            )
        elif name is not None:
            settings["node_name"] = name
    if "node_lease" in table:
        lease = check_duration(table["node_lease"], "daemon.node_lease", problems)
        if lease is not None and not MIN_NODE_LEASE <= lease <= MAX_NODE_LEASE:
            problems.add(
                "daemon.node_lease",
                f"must be between 1s and 1h, got {lease.total_seconds():g}s",
            )
        elif lease is not None:
            settings["node_lease"] = lease


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


def read_daemon_settings(
    config: Located,
    environ: Mapping[str, str] = os.environ,
    data_dir_override: str | None = None,
) -> DaemonSettings:
    """Read only the `[daemon]` table of the config file; raise ConfigError on its problems.

    A file that is broken elsewhere (a task, say) still tells where the daemon
    is, so `runyard reload` can hear the daemon refuse it.
    """
    document = parse_toml(read_config_text(config.path, config.source), config.path)
    problems = Problems()
    daemon = interpolate(document.get("daemon", {}), environ, problems, at=("daemon",))
    settings = parse_daemon(daemon, config.path, environ, data_dir_override, problems)
    if settings is None:
        raise ConfigError(str(config.path), problems.errors)
    return settings
