"""Read the `[defaults]` and `[tasks.<name>]` tables into TaskDefinitions."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from runyard.clock import utc_now
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
    check_umask,
    check_user,
    describe,
    key_path,
    quote,
)
from runyard.config.schedules import check_timezone, resolve_schedule
from runyard.domain.models import (
    TASK_NAME_PATTERN,
    TASK_NAME_RE,
    CatchUp,
    EnvBase,
    LogOnFull,
    OverlapPolicy,
    ParamPassing,
    ParamSpec,
    RetryBackoff,
    TaskDefinition,
)

PARAM_NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,63}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_PARAM_NAME_RE = re.compile(PARAM_NAME_PATTERN)
_ENV_NAME_RE = re.compile(ENV_NAME_PATTERN)
PARAM_KEYS = ("name", "env", "arg", "default", "required", "choices")
MIN_LOG_SIZE = 1024


def check_env(value: object, path: str, problems: Problems) -> dict[str, str] | None:
    """Return the `env` table: variable names mapped to string values."""
    table = check_table(value, path, problems)
    if table is None:
        return None
    result: dict[str, str] = {}
    ok = True
    for name, item in table.items():
        item_path = key_path(path, name)
        if not _ENV_NAME_RE.fullmatch(name):
            problems.add(item_path, f"variable name must match {ENV_NAME_PATTERN}")
            ok = False
        elif isinstance(item, str):
            result[name] = item
        else:
            problems.add(item_path, f"expected a string, got {describe(item)} (quote the value)")
            ok = False
    return result if ok else None


def check_exit_codes(value: object, path: str, problems: Problems) -> tuple[int, ...] | None:
    """Return the non-empty list of exit codes 0..255, without repeats."""
    if not isinstance(value, list):
        problems.add(path, f"expected an array of integers like [0, 3], got {describe(value)}")
        return None
    if not value:
        problems.add(path, "must list at least one exit code")
        return None
    codes = [
        check_int(item, f"{path}[{index}]", problems, 0, 255) for index, item in enumerate(value)
    ]
    valid = [code for code in codes if code is not None]
    if len(valid) != len(codes):
        return None
    return tuple(dict.fromkeys(valid))


def check_params(value: object, path: str, problems: Problems) -> tuple[ParamSpec, ...] | None:
    """Return the declared parameters, written as `[[tasks.<name>.params]]` tables."""
    if not isinstance(value, list):
        problems.add(
            path, f"expected an array of tables ([[{path}]] sections), got {describe(value)}"
        )
        return None
    before = len(problems)
    specs: list[ParamSpec] = []
    names: dict[str, int] = {}
    env_names: dict[str, int] = {}
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        spec = _check_param(item, item_path, problems)
        if spec is None:
            continue
        if spec.name in names:
            problems.add(
                f"{item_path}.name",
                f"duplicate parameter {quote(spec.name)} (also {path}[{names[spec.name]}])",
            )
            continue
        names[spec.name] = index
        if spec.passing is ParamPassing.ENV:
            # Two parameters writing one variable would silently overwrite each other.
            if spec.env_name in env_names:
                problems.add(
                    item_path,
                    f"sets environment variable {spec.env_name}, "
                    f"like {path}[{env_names[spec.env_name]}]",
                )
                continue
            env_names[spec.env_name] = index
        specs.append(spec)
    return tuple(specs) if len(problems) == before else None


def _check_param(item: object, path: str, problems: Problems) -> ParamSpec | None:
    table = check_table(item, path, problems)
    if table is None:
        return None
    before = len(problems)
    check_keys(table, path, PARAM_KEYS, problems)
    name: str | None = None
    if "name" not in table:
        problems.add(f"{path}.name", "required key is missing")
    else:
        name = check_str(table["name"], f"{path}.name", problems)
        if name is not None and not _PARAM_NAME_RE.fullmatch(name):
            problems.add(f"{path}.name", f"parameter name must match {PARAM_NAME_PATTERN}")
    env = ""
    if "env" in table:
        env = check_str(table["env"], f"{path}.env", problems) or ""
        if env and not _ENV_NAME_RE.fullmatch(env):
            problems.add(f"{path}.env", f"variable name must match {ENV_NAME_PATTERN}")
    arg = check_bool(table["arg"], f"{path}.arg", problems) if "arg" in table else False
    if arg and "env" in table:
        problems.add(f"{path}.env", "cannot be set with arg = true (the value is an argument)")
    required = (
        check_bool(table["required"], f"{path}.required", problems)
        if "required" in table
        else False
    )
    choices = _check_choices(table, path, problems)
    default = _check_default(table, path, problems)
    if default is not None and choices and default not in choices:
        problems.add(
            f"{path}.default",
            f"must be one of {', '.join(choices)}, got {quote(default)}",
        )
    if len(problems) > before or name is None:
        return None
    return ParamSpec(
        name=name,
        passing=ParamPassing.ARG if arg else ParamPassing.ENV,
        env=env,
        default=default,
        required=bool(required),
        choices=choices,
    )


def _param_text(value: object, path: str, problems: Problems) -> str | None:
    # Numbers are what a user who forgot the quotes meant: accept them as text.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return check_str(value, path, problems)


def _check_default(table: dict[str, object], path: str, problems: Problems) -> str | None:
    if "default" not in table:
        return None
    return _param_text(table["default"], f"{path}.default", problems)


def _check_choices(table: dict[str, object], path: str, problems: Problems) -> tuple[str, ...]:
    if "choices" not in table:
        return ()
    value = table["choices"]
    choices_path = f"{path}.choices"
    if not isinstance(value, list):
        problems.add(choices_path, f"expected an array of strings, got {describe(value)}")
        return ()
    if not value:
        problems.add(choices_path, "must list at least one choice")
        return ()
    texts = [_param_text(item, f"{choices_path}[{i}]", problems) for i, item in enumerate(value)]
    return tuple(text for text in texts if text is not None)


# Keys a task may set, each with its check. The key names are TaskDefinition's
# field names, so a checked table maps straight onto the dataclass.
TASK_CHECKS: dict[str, Check] = {
    "run": lambda v, p, pr: check_str(v, p, pr, non_empty=True),
    "description": check_str,
    "automation": lambda v, p, pr: check_str(v, p, pr, non_empty=True, max_length=200),
    "shell": lambda v, p, pr: check_str(v, p, pr, non_empty=True),
    "working_dir": lambda v, p, pr: check_str(v, p, pr, non_empty=True),
    "env": check_env,
    "env_file": lambda v, p, pr: check_str(v, p, pr, non_empty=True),
    "env_base": lambda v, p, pr: check_enum(v, p, pr, EnvBase),
    "secrets": check_env,
    "secrets_file": lambda v, p, pr: check_str(v, p, pr, non_empty=True),
    "umask": check_umask,
    "user": check_user,
    "timeout": lambda v, p, pr: check_duration(v, p, pr, positive=True),
    "graceful_stop": check_duration,
    "stop_signal": check_signal,
    "success_exit_codes": check_exit_codes,
    "max_concurrent": lambda v, p, pr: check_int(v, p, pr, 1, 1024),
    "max_queued": lambda v, p, pr: check_int(v, p, pr, 0, 1_000_000),
    "max_queued_input": lambda v, p, pr: check_size(v, p, pr, 0),
    "on_overlap": lambda v, p, pr: check_enum(v, p, pr, OverlapPolicy),
    "retry_attempts": lambda v, p, pr: check_int(v, p, pr, 0, 100),
    "retry_delay": check_duration,
    "retry_backoff": lambda v, p, pr: check_enum(v, p, pr, RetryBackoff),
    "replicas": lambda v, p, pr: check_int(v, p, pr, 1, 64),
    "log_max_size": lambda v, p, pr: check_size(v, p, pr, MIN_LOG_SIZE),
    "log_on_full": lambda v, p, pr: check_enum(v, p, pr, LogOnFull),
    "keep_runs": lambda v, p, pr: check_int(v, p, pr, 1),
    "keep_for": lambda v, p, pr: check_duration(v, p, pr, positive=True),
    "params": check_params,
    "jitter": check_duration,
    "run_on_start": check_bool,
    "catch_up": lambda v, p, pr: check_enum(v, p, pr, CatchUp),
    "max_catch_up_runs": lambda v, p, pr: check_int(v, p, pr, 1, 10000),
    # Not fields themselves: resolve_schedule turns them into `schedule`.
    "cron": lambda v, p, pr: check_str(v, p, pr, non_empty=True),
    "timezone": check_timezone,
}

# Keys of upcoming features. They are accepted (in tasks and in [defaults])
# and type-checked so configs written for them load today, but nothing is
# stored: TaskDefinition has no fields for them yet.
IGNORED_CHECKS: dict[str, Check] = {
    "manual_trigger": check_bool,
    "group": check_str,
}

TASK_KEYS = frozenset(TASK_CHECKS) | frozenset(IGNORED_CHECKS)
_TASK_ONLY = {
    key: "not allowed in [defaults]; set it on each task"
    for key in ("run", "description", "automation", "params", "cron")
}
DEFAULTS_KEYS = TASK_KEYS - frozenset(_TASK_ONLY)


def _check_values(
    table: dict[str, object], path: str, problems: Problems, allowed: frozenset[str]
) -> dict[str, object]:
    """Check each allowed key of `table`; return the valid TaskDefinition fields."""
    values: dict[str, object] = {}
    ignored: list[str] = []
    for key, raw in table.items():
        if key not in allowed:
            continue
        if key in IGNORED_CHECKS:
            IGNORED_CHECKS[key](raw, key_path(path, key), problems)
            ignored.append(key)
            continue
        parsed = TASK_CHECKS[key](raw, key_path(path, key), problems)
        if parsed is not None:
            values[key] = parsed
    if ignored:
        problems.warn(path, f"{', '.join(ignored)}: accepted but ignored, not supported yet")
    return values


def parse_defaults(value: object, problems: Problems) -> dict[str, object]:
    """Return the checked `[defaults]` values every task inherits."""
    table = check_table(value, "defaults", problems)
    if table is None:
        return {}
    check_keys(table, "defaults", DEFAULTS_KEYS, problems, refused=_TASK_ONLY)
    return _check_values(table, "defaults", problems, DEFAULTS_KEYS)


def parse_tasks(
    value: object,
    defaults: dict[str, object],
    base_dir: Path,
    problems: Problems,
    default_timezone: str = "UTC",
    now: datetime | None = None,
) -> dict[str, TaskDefinition]:
    """Return the valid tasks of the `[tasks]` table, sorted by name.

    `default_timezone` applies to tasks that set no `timezone` themselves or in
    [defaults]; `now` (default: the real clock) decides which schedules never fire.
    """
    now = utc_now() if now is None else now
    table = check_table(value, "tasks", problems)
    if table is None:
        return {}
    tasks: dict[str, TaskDefinition] = {}
    for name, raw in table.items():
        path = key_path("tasks", name)
        before = len(problems)
        if not TASK_NAME_RE.fullmatch(name):
            problems.add(path, f"task name must match {TASK_NAME_PATTERN}")
        task = _parse_task(name, raw, path, defaults, base_dir, problems, default_timezone, now)
        if task is not None and len(problems) == before:
            tasks[name] = task
    _warn_shared_display_names(tasks, problems)
    return dict(sorted(tasks.items()))


def _parse_task(
    name: str,
    raw: object,
    path: str,
    defaults: dict[str, object],
    base_dir: Path,
    problems: Problems,
    default_timezone: str,
    now: datetime,
) -> TaskDefinition | None:
    table = check_table(raw, path, problems)
    if table is None:
        return None
    before = len(problems)
    check_keys(table, path, TASK_KEYS, problems)
    own = _check_values(table, path, problems, TASK_KEYS)
    if "run" not in table:
        problems.add(key_path(path, "run"), "required key is missing")
    fields = {**defaults, **own}
    # Checked even when other keys are wrong: every problem of a file shows in
    # one pass, not one more after each fix.
    schedule = resolve_schedule(fields, set(own), path, default_timezone, now, problems)
    if len(problems) > before:
        return None
    if isinstance(defaults.get("env"), dict) and isinstance(own.get("env"), dict):
        # Variables merge one by one: a task adding FOO keeps the defaults' PATH.
        fields["env"] = {
            **cast(dict[str, str], defaults["env"]),
            **cast(dict[str, str], own["env"]),
        }
    if isinstance(defaults.get("secrets"), dict) and isinstance(own.get("secrets"), dict):
        fields["secrets"] = {
            **cast(dict[str, str], defaults["secrets"]),
            **cast(dict[str, str], own["secrets"]),
        }
    for key in ("env", "secrets"):
        if key in fields:
            fields[key] = tuple(cast(dict[str, str], fields[key]).items())
    for key in ("env_file", "secrets_file", "working_dir"):
        if key in fields:
            fields[key] = str(absolute_path(base_dir, cast(str, fields[key])))
    # Every value was checked against its field's type by TASK_CHECKS.
    return TaskDefinition(name=name, schedule=schedule, **cast(dict[str, Any], fields))


def _warn_shared_display_names(tasks: dict[str, TaskDefinition], problems: Problems) -> None:
    owners: dict[str, str] = {}
    for name, task in tasks.items():
        other = owners.setdefault(task.display_name, name)
        if other != name:
            problems.warn(
                key_path(key_path("tasks", name), "automation"),
                f"display name {quote(task.display_name)} is also used by task {other}",
            )
