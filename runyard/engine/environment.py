"""What a run's process gets: argv, environment and working directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from runyard.domain.models import Run, TaskDefinition
from runyard.domain.params import param_arguments, param_environment


def parse_env_file(text: str) -> dict[str, str]:
    """Return the KEY=VALUE pairs of an env file; `#` comments and blank lines are skipped.

    `export KEY=...` and single or double quotes around the value are accepted,
    since env files are usually written for shells too.
    """
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def build_argv(task: TaskDefinition, run: Run) -> list[str]:
    """Return `<shell> -e -c <run> <task> [args...]`.

    Params travel as positional arguments ("$1"...) or environment variables,
    never inside the script text, so no value can change what the script does.
    """
    return [task.shell, "-e", "-c", task.run, task.name, *param_arguments(task.params, run.params)]


def build_environment(
    task: TaskDefinition,
    run: Run,
    base: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the process environment; raise OSError when the env_file cannot be read."""
    env = dict(base)
    if task.env_file:
        env.update(parse_env_file(Path(task.env_file).read_text(encoding="utf-8")))
    env.update(dict(task.env))
    env.update(param_environment(task.params, run.params))
    env.update(
        {
            "RUNYARD_RUN_ID": run.id,
            "RUNYARD_TASK": task.name,
            "RUNYARD_REPLICA_INDEX": str(run.replica_index),
            "RUNYARD_RETRY_ATTEMPT": str(run.retry_attempt),
        }
    )
    # The run's workspace: RUNYARD_OUTPUT_DIR, and RUNYARD_INPUT(_CSV) with input data.
    env.update(extra or {})
    return env
