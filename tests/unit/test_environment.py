"""What a run's process gets in its environment: the `runyard` command among it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from runyard.domain.models import EnvBase, Run, RunStatus, TaskDefinition, TriggeredBy
from runyard.domain.run_environment import BIN_ENV as RUNYARD_BIN_ENV
from runyard.engine.environment import build_environment, with_command_dir

T0 = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
COMMAND = Path("/opt/runyard/venv/bin/runyard")
RUN = Run("R1", "t", RunStatus.RUNNING, T0, TriggeredBy.API)


def test_the_daemons_runyard_is_on_every_runs_path() -> None:
    env = build_environment(
        TaskDefinition(name="t", run="runyard output x"),
        RUN,
        {"PATH": "/usr/bin:/bin"},
        command=COMMAND,
    )
    assert env["PATH"] == "/usr/bin:/bin:/opt/runyard/venv/bin"
    assert env[RUNYARD_BIN_ENV] == str(COMMAND)


def test_a_task_that_sets_path_still_finds_runyard() -> None:
    task = TaskDefinition(name="t", run="x", env=(("PATH", "/srv/tools"),))
    env = build_environment(task, RUN, {"PATH": "/usr/bin"}, command=COMMAND)
    assert env["PATH"] == "/srv/tools:/opt/runyard/venv/bin"


def test_with_command_dir() -> None:
    # Added last: the directory also holds the daemon's python3, which must not
    # shadow the one the task's scripts expect.
    assert with_command_dir("/a:/b", COMMAND) == "/a:/b:/opt/runyard/venv/bin"
    assert with_command_dir("/opt/runyard/venv/bin:/a", COMMAND) == "/opt/runyard/venv/bin:/a"
    assert with_command_dir(None, COMMAND) == "/usr/local/bin:/usr/bin:/bin:/opt/runyard/venv/bin"
    assert with_command_dir("", COMMAND) == "/usr/local/bin:/usr/bin:/bin:/opt/runyard/venv/bin"


def test_a_clean_environment_holds_the_tasks_env_and_runyards_own_only() -> None:
    task = TaskDefinition(name="t", run="x", env=(("HOME", "/home/a"),), env_base=EnvBase.CLEAN)
    env = build_environment(task, RUN, {"SECRET": "daemon's", "PATH": "/opt/x"}, command=COMMAND)
    assert "SECRET" not in env
    assert env["HOME"] == "/home/a"
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin:/opt/runyard/venv/bin"
    assert {name for name in env if not name.startswith("RUNYARD_")} == {"HOME", "PATH"}
