"""Read the `[services.<name>]` tables (and their `health_check`) into ServiceDefinitions."""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection
from pathlib import Path
from typing import Any, cast

from runyard.config.checks import (
    Check,
    Problems,
    absolute_path,
    check_bool,
    check_duration,
    check_enum,
    check_int,
    check_keys,
    check_signal,
    check_size,
    check_str,
    check_table,
    check_user,
    describe,
    key_path,
    quote,
)
from runyard.config.tasks import MIN_LOG_SIZE, check_env
from runyard.domain.models import TASK_NAME_PATTERN, TASK_NAME_RE, LogOnFull, RetryBackoff
from runyard.domain.services import (
    HealthCheck,
    ProbeKind,
    RestartPolicy,
    ServiceDefinition,
    find_cycle,
    split_host_port,
)

MAX_INSTANCES = 64
MAX_PRIORITY = 1_000_000

# Keys a service may set, each with its check; the names are ServiceDefinition's fields.
SERVICE_CHECKS: dict[str, Check] = {
    "run": lambda v, p, pr: check_str(v, p, pr, non_empty=True),
    "instances": lambda v, p, pr: check_int(v, p, pr, 1, MAX_INSTANCES),
    "restart": lambda v, p, pr: check_enum(v, p, pr, RestartPolicy),
    "restart_delay": check_duration,
    "restart_backoff": lambda v, p, pr: check_enum(v, p, pr, RetryBackoff),
    "restart_attempts": lambda v, p, pr: check_int(v, p, pr, 0, 100),
    "healthy_after": check_duration,
    "priority": lambda v, p, pr: check_int(v, p, pr, -MAX_PRIORITY, MAX_PRIORITY),
    "autostart": check_bool,
    "graceful_stop": check_duration,
    "stop_signal": check_signal,
    "env": check_env,
    "env_file": lambda v, p, pr: check_str(v, p, pr, non_empty=True),
    "working_dir": lambda v, p, pr: check_str(v, p, pr, non_empty=True),
    "shell": lambda v, p, pr: check_str(v, p, pr, non_empty=True),
    "user": check_user,
    "log_max_size": lambda v, p, pr: check_size(v, p, pr, MIN_LOG_SIZE),
    "log_on_full": lambda v, p, pr: check_enum(v, p, pr, LogOnFull),
}
# Checked against the other services once all are read.
SERVICE_KEYS = (*SERVICE_CHECKS, "depends_on", "health_check")

HEALTH_CHECK_CHECKS: dict[str, Check] = {
    "interval": lambda v, p, pr: check_duration(v, p, pr, positive=True),
    "timeout": lambda v, p, pr: check_duration(v, p, pr, positive=True),
    "failures": lambda v, p, pr: check_int(v, p, pr, 1, 100),
    "start_period": check_duration,
}
PROBE_KEYS = tuple(kind.value for kind in ProbeKind)
HEALTH_CHECK_KEYS = (*PROBE_KEYS, *HEALTH_CHECK_CHECKS)


def parse_services(
    value: object, base_dir: Path, task_names: Collection[str], problems: Problems
) -> dict[str, ServiceDefinition]:
    """Return the valid services of the `[services]` table, sorted by name.

    A service may not share its name with a task: both record runs under
    that name, and `runyard start NAME` must know which is meant.
    """
    table = check_table(value, "services", problems)
    if table is None:
        return {}
    services: dict[str, ServiceDefinition] = {}
    for name, raw in table.items():
        path = key_path("services", name)
        before = len(problems)
        if not TASK_NAME_RE.fullmatch(name):
            problems.add(path, f"service name must match {TASK_NAME_PATTERN}")
        elif name in task_names:
            problems.add(path, f"{quote(name)} is also a task; a service needs a name of its own")
        service = _parse_service(name, raw, path, base_dir, problems)
        if service is not None and len(problems) == before:
            services[name] = service
    _check_dependencies(table, services, task_names, problems)
    return dict(sorted(services.items()))


def _parse_service(
    name: str, raw: object, path: str, base_dir: Path, problems: Problems
) -> ServiceDefinition | None:
    table = check_table(raw, path, problems)
    if table is None:
        return None
    before = len(problems)
    check_keys(table, path, SERVICE_KEYS, problems)
    fields: dict[str, object] = {}
    for key, check in SERVICE_CHECKS.items():
        if key in table:
            parsed = check(table[key], key_path(path, key), problems)
            if parsed is not None:
                fields[key] = parsed
    if "run" not in table:
        problems.add(key_path(path, "run"), "required key is missing")
    if "depends_on" in table:
        depends_on = _check_names(table["depends_on"], key_path(path, "depends_on"), problems)
        if depends_on is not None:
            if name in depends_on:
                problems.add(key_path(path, "depends_on"), "a service cannot depend on itself")
            fields["depends_on"] = depends_on
    if "health_check" in table:
        health = _parse_health_check(
            table["health_check"], key_path(path, "health_check"), problems
        )
        if health is not None:
            fields["health_check"] = health
    if len(problems) > before:
        return None
    if "env" in fields:
        fields["env"] = tuple(cast(dict[str, str], fields["env"]).items())
    for key in ("env_file", "working_dir"):
        if key in fields:
            fields[key] = str(absolute_path(base_dir, cast(str, fields[key])))
    # Every value was checked against its field's type by SERVICE_CHECKS.
    return ServiceDefinition(name=name, **cast(dict[str, Any], fields))


def _check_names(value: object, path: str, problems: Problems) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        problems.add(path, f'expected an array of service names like ["db"], got {describe(value)}')
        return None
    names: list[str] = []
    for index, item in enumerate(value):
        text = check_str(item, f"{path}[{index}]", problems, non_empty=True)
        if text is None:
            return None
        if text in names:
            problems.add(f"{path}[{index}]", f"{quote(text)} is listed twice")
            return None
        names.append(text)
    return tuple(names)


def _parse_health_check(value: object, path: str, problems: Problems) -> HealthCheck | None:
    table = check_table(value, path, problems)
    if table is None:
        return None
    before = len(problems)
    check_keys(table, path, HEALTH_CHECK_KEYS, problems)
    kinds = [key for key in PROBE_KEYS if key in table]
    if len(kinds) != 1:
        given = f"got {', '.join(kinds)}" if kinds else "got none"
        problems.add(path, f"set exactly one of http, tcp or run; {given}")
    fields: dict[str, object] = {}
    for key, check in HEALTH_CHECK_CHECKS.items():
        if key in table:
            parsed = check(table[key], key_path(path, key), problems)
            if parsed is not None:
                fields[key] = parsed
    target = None
    if len(kinds) == 1:
        kind = ProbeKind(kinds[0])
        target = _check_target(kind, table[kind.value], key_path(path, kind.value), problems)
    if len(problems) > before or target is None:
        return None
    return HealthCheck(kind=kind, target=target, **cast(dict[str, Any], fields))


def _check_target(kind: ProbeKind, value: object, path: str, problems: Problems) -> str | None:
    text = check_str(value, path, problems, non_empty=True)
    if text is None:
        return None
    if kind is ProbeKind.HTTP:
        url = urllib.parse.urlsplit(text.strip())
        try:
            port = url.port
        except ValueError:
            port = -1
        if url.scheme not in ("http", "https") or not url.hostname or port == -1:
            problems.add(
                path, f"expected an http:// or https:// URL with a host, got {quote(text)}"
            )
            return None
        return text.strip()
    if kind is ProbeKind.TCP and split_host_port(text) is None:
        problems.add(
            path, f'expected host:port like "127.0.0.1:5432" (port 1..65535), got {quote(text)}'
        )
        return None
    return text.strip() if kind is ProbeKind.TCP else text


def _check_dependencies(
    table: dict[str, object],
    services: dict[str, ServiceDefinition],
    task_names: Collection[str],
    problems: Problems,
) -> None:
    """Report dependencies on names that are no service, then each dependency cycle once."""
    graph: dict[str, tuple[str, ...]] = {}
    for name, service in services.items():
        path = key_path(key_path("services", name), "depends_on")
        for index, dep in enumerate(service.depends_on):
            if dep in table:
                continue
            what = "a task, not a service" if dep in task_names else "no service of that name"
            problems.add(f"{path}[{index}]", f"{quote(dep)}: {what}")
        graph[name] = service.depends_on
    reported: set[str] = set()
    while True:
        cycle = find_cycle({name: deps for name, deps in graph.items() if name not in reported})
        if cycle is None:
            return
        path = key_path(key_path("services", cycle[0]), "depends_on")
        problems.add(path, "dependency cycle " + " -> ".join(cycle))
        reported.update(cycle)
        for name in cycle:
            services.pop(name, None)
