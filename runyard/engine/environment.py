"""What a run's process gets: argv, environment and working directory."""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from runyard.domain.models import EnvBase, Run, TaskDefinition
from runyard.domain.params import param_arguments, param_environment
from runyard.domain.run_environment import (
    BIN_ENV,
    REPLICA_INDEX_ENV,
    RETRY_ATTEMPT_ENV,
    RUN_ID_ENV,
    TASK_ENV,
)

_COMMAND = "runyard"
# The PATH a run gets when neither the daemon nor the task sets one.
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@functools.cache
def runyard_command() -> Path | None:
    """Return the `runyard` script installed with the running interpreter, or None.

    A daemon started as `.venv/bin/runyard serve` (as `make run` does) runs with
    a PATH that may not hold `.venv/bin`; its runs still need `runyard output`.
    """
    candidates = [Path(sys.executable).parent / _COMMAND]
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / _COMMAND)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def with_command_dir(path: str | None, command: Path) -> str:
    """Return PATH with the directory of `command` added last, unless it is already on it.

    Last, not first: that directory also holds the daemon's own `python3` and
    `pip`, which must not shadow the ones a task's scripts expect.
    """
    entries = [entry for entry in (path or _DEFAULT_PATH).split(os.pathsep) if entry]
    directory = str(command.parent)
    if directory not in entries:
        entries.append(directory)
    return os.pathsep.join(entries)


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


def load_secrets(task: TaskDefinition) -> dict[str, str]:
    """Return the task's secrets: `secrets_file` (read now), then `secrets`.

    Raise OSError when the file cannot be read.
    """
    found: dict[str, str] = {}
    if task.secrets_file:
        found.update(parse_env_file(Path(task.secrets_file).read_text(encoding="utf-8")))
    found.update(dict(task.secrets))
    return found


# Shorter values are not masked in logs: "yes" or "1234" would hide half a log.
MIN_MASKED_LENGTH = 4


def mask_values(secrets: Mapping[str, str]) -> tuple[bytes, ...]:
    """The byte strings to mask as *** in a run's output, longest first.

    A value of several lines is masked line by line (logs are kept by line).
    """
    pieces = {
        line.encode("utf-8")
        for value in secrets.values()
        for line in value.splitlines()
        if len(line.strip()) >= MIN_MASKED_LENGTH
    }
    return tuple(sorted(pieces, key=lambda piece: (-len(piece), piece)))


def build_environment(
    task: TaskDefinition,
    run: Run,
    base: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
    command: Path | None = None,
    secrets: Mapping[str, str] | None = None,
    identity: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the process environment; raise OSError when the env_file cannot be read.

    `identity` holds HOME, USER and LOGNAME of the task's `user`, when the run
    drops to one: they replace the daemon's inherited ones (a clean environment
    has none to replace), and the task's env can still set them.

    `command` is the daemon's own `runyard` script (default: found next to the
    running interpreter): its directory is added to the run's PATH and its
    path goes into $RUNYARD_BIN, so a script can call `runyard output` wherever
    runyard was installed.
    """
    # env_base = "clean": nothing of the daemon's environment, as cron gives a
    # job only the variables its crontab sets (and PATH a default).
    env = {}
    if task.env_base is EnvBase.INHERIT:
        env = {**base, **(identity or {})}
    if task.env_file:
        env.update(parse_env_file(Path(task.env_file).read_text(encoding="utf-8")))
    env.update(dict(task.env))
    env.update(secrets or {})
    env.update(param_environment(task.params, run.params))
    env.update(
        {
            RUN_ID_ENV: run.id,
            TASK_ENV: task.name,
            REPLICA_INDEX_ENV: str(run.replica_index),
            RETRY_ATTEMPT_ENV: str(run.retry_attempt),
        }
    )
    # The run's workspace: RUNYARD_OUTPUT_DIR, and RUNYARD_INPUT(_CSV) with input data.
    env.update(extra or {})
    command = command or runyard_command()
    if command is not None:
        # After the task's own env: even a task that sets PATH finds the helper.
        env["PATH"] = with_command_dir(env.get("PATH"), command)
        # The `runyard` command that started this daemon: `"$RUNYARD_BIN" output ...`.
        env[BIN_ENV] = str(command)
    return env
