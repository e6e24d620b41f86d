"""The JSON Schema of runyard.toml (`runyard schema`), generated from the config model.

Each table's keys are the keys its checks accept (DAEMON_KEYS, the task
checks, ACCOUNT_CHECKS, ...), and each key's type comes from the field it
fills in the model (DaemonSettings, TaskDefinition, Account, ...), so a key
added to the code is in the schema without anyone writing it here. The few
keys that are not one field each (`cron`, `timezone`, a param's `arg`) and
the fields whose config form differs from their type (sizes, signals) are
named below. Editors (Taplo, Even Better TOML) use it to complete and check
keys; `runyard validate` remains the full check (ranges, time zones, cron).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

from runyard.config.accounts import ACCOUNT_CHECKS, ACCOUNT_ID_PATTERN
from runyard.config.daemon import DAEMON_KEYS, NODE_NAME_PATTERN, DaemonSettings
from runyard.config.loader import SECTIONS
from runyard.config.metrics import METRICS_KEYS, MetricsSettings
from runyard.config.notifications import (
    NOTIFIER_KEYS,
    ROUTE_KEYS,
    SETTINGS_KEYS,
    NotificationSettings,
    Notifier,
)
from runyard.config.schedules import SCHEDULER_KEYS
from runyard.config.services import HEALTH_CHECK_KEYS, PROBE_KEYS, SERVICE_KEYS
from runyard.config.tasks import DEFAULTS_KEYS, IGNORED_CHECKS, PARAM_KEYS, TASK_KEYS
from runyard.domain.accounts import Account
from runyard.domain.models import TASK_NAME_PATTERN, TaskDefinition
from runyard.domain.notifications import NotificationKind
from runyard.domain.services import HealthCheck, ServiceDefinition

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DURATION: dict[str, Any] = {
    "type": ["string", "number"],
    "pattern": r"^\s*(\d+(\.\d+)?(ms|us|s|m|h|d))+\s*$",
    "minimum": 0,
    "description": "a duration: 90s, 5m, 1h30m, 500ms, 2d, or a number of seconds",
}
SIZE: dict[str, Any] = {
    "type": ["string", "integer"],
    "pattern": r"(?i)^\s*\d+(\.\d+)?\s*(b|kb|kib|mb|mib|gb|gib)?\s*$",
    "description": 'a size: "512kb", "10mb", "1gb", or a number of bytes',
}
STRING: dict[str, Any] = {"type": "string"}
TABLE_OF_STRINGS: dict[str, Any] = {"type": "object", "additionalProperties": STRING}

# Keys whose config form is not their field's type, or that fill no field.
_TASK_KEYS_OWN: dict[str, dict[str, Any]] = {
    "cron": {**STRING, "description": "5 or 6 cron fields, @daily-style, or @every <duration>"},
    "timezone": {**STRING, "description": "an IANA time zone, e.g. Europe/Riga"},
    "stop_signal": {**STRING, "description": "a signal name: SIGTERM or TERM"},
    "log_max_size": SIZE,
    "umask": {"type": "string", "pattern": r"^\s*0?[0-7]{3}\s*$", "description": 'e.g. "027"'},
}
# A param's keys (PARAM_KEYS): `arg = true` fills ParamSpec.passing, the rest one field each.
_PARAM_TYPES: dict[str, dict[str, Any]] = {
    "name": STRING,
    "env": STRING,
    "arg": {"type": "boolean"},
    "default": STRING,
    "required": {"type": "boolean"},
    "choices": {"type": "array", "items": STRING},
}
_DAEMON_KEYS_OWN: dict[str, dict[str, Any]] = {
    "node_name": {"type": "string", "pattern": NODE_NAME_PATTERN},
    "max_request_size": SIZE,
    "max_output_size": SIZE,
    "data_dir": STRING,
}


_NOTIFIER_KEYS_OWN: dict[str, dict[str, Any]] = {
    "urls": {"type": "array", "items": {**STRING, "description": "an Apprise URL"}},
    "template": {**STRING, "description": "a Jinja2 template file, relative to the config"},
}


def _route() -> dict[str, Any]:
    kinds = {"type": "array", "items": {"enum": [kind.value for kind in NotificationKind]}}
    names = {"type": "array", "items": STRING}
    route = _table(None, ROUTE_KEYS, {"kinds": kinds, "tasks": names, "notifiers": names})
    route["required"] = ["kinds", "notifiers"]
    return route


# The probe keys fill HealthCheck.kind and .target: exactly one of them is set.
_PROBE_TYPES: dict[str, dict[str, Any]] = {
    "http": {**STRING, "description": "a URL to GET; 2xx or 3xx passes"},
    "tcp": {**STRING, "description": "host:port to connect to"},
    "run": {**STRING, "description": "a command run by the service's shell; exit 0 passes"},
}


def _service() -> dict[str, Any]:
    health_check = _table(HealthCheck, HEALTH_CHECK_KEYS, _PROBE_TYPES)
    health_check["oneOf"] = [{"required": [key]} for key in PROBE_KEYS]
    own = {
        "stop_signal": _TASK_KEYS_OWN["stop_signal"],
        "log_max_size": SIZE,
        "health_check": health_check,
    }
    service = _table(ServiceDefinition, SERVICE_KEYS, own)
    service["required"] = ["run"]
    return service


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a runyard.toml file."""
    param = _table(None, PARAM_KEYS, _PARAM_TYPES)
    param["required"] = ["name"]
    own = {**_TASK_KEYS_OWN, "params": {"type": "array", "items": param}}
    task = _table(TaskDefinition, TASK_KEYS, own)
    defaults = _table(TaskDefinition, DEFAULTS_KEYS, own)
    task["required"] = ["run"]
    properties: dict[str, Any] = {
        "daemon": _table(DaemonSettings, DAEMON_KEYS, _DAEMON_KEYS_OWN),
        "scheduler": _table(None, SCHEDULER_KEYS, {"timezone": _TASK_KEYS_OWN["timezone"]}),
        "defaults": defaults,
        "tasks": {
            "type": "object",
            "propertyNames": {"pattern": TASK_NAME_PATTERN},
            "additionalProperties": task,
        },
        "services": {
            "type": "object",
            "propertyNames": {"pattern": TASK_NAME_PATTERN},
            "additionalProperties": _service(),
        },
        "accounts": {
            "type": "object",
            "propertyNames": {"pattern": ACCOUNT_ID_PATTERN},
            "additionalProperties": _table(Account, tuple(ACCOUNT_CHECKS), {}),
        },
        "metrics": _table(MetricsSettings, METRICS_KEYS, {}),
        "notifications": _table(NotificationSettings, SETTINGS_KEYS, {}),
        "notifiers": {
            "type": "object",
            "propertyNames": {"pattern": TASK_NAME_PATTERN},
            "additionalProperties": _table(Notifier, NOTIFIER_KEYS, _NOTIFIER_KEYS_OWN),
        },
        "routes": {"type": "array", "items": _route()},
    }
    missing = set(SECTIONS) - set(properties)
    if missing:  # a new section must say its model here; the tests hold this
        raise LookupError(f"no schema for the config section(s) {sorted(missing)}")
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "runyard.toml",
        "description": "The config file of runyard (generated by `runyard schema`).",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }


def _table(
    model: type | None, keys: typing.Iterable[str], own: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    hints = typing.get_type_hints(model) if model is not None else {}
    fields = {field.name for field in dataclasses.fields(model)} if model is not None else set()
    properties: dict[str, Any] = {}
    unused = set(own) - set(keys)
    if model is None and unused:
        raise LookupError(f"schema for {sorted(unused)}, which no check accepts")
    for key in sorted(keys):
        if key in own:
            properties[key] = own[key]
        elif key in IGNORED_CHECKS:
            properties[key] = {"description": "accepted and ignored: not supported yet"}
        elif key in fields:
            properties[key] = _of_type(hints[key])
        else:
            raise LookupError(f"{key!r} fills no field of {model} and has no schema of its own")
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _of_type(hint: Any) -> dict[str, Any]:
    """The JSON Schema of a model field's type, as the config writes it."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        present = [arg for arg in args if arg is not type(None)]
        if len(present) == 1:
            return _of_type(present[0])
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint in (str, Path):
        return dict(STRING)
    if hint is timedelta:
        return dict(DURATION)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [member.value for member in hint]}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        if typing.get_origin(item) is tuple and typing.get_args(item) == (str, str):
            return dict(TABLE_OF_STRINGS)  # env-like: a table of strings
        return {"type": "array", "items": _of_type(item)}
    raise LookupError(f"no JSON Schema for the field type {hint!r}")
