"""Schedules from the command line, against a real daemon: pause, resume, reload, SIGHUP."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from runyard_harness import (
    CONFIG,
    TEST_TOKEN,
    Daemon,
    cli_env,
    free_port,
    start_daemon,
    stop_daemon,
)

SCHEDULED = """
[tasks.ticker]
description = "Every five minutes."
run = "echo tick"
cron = "*/5 * * * *"
"""

ADDED = """
[tasks.added]
run = "echo added"
cron = "0 * * * *"
"""

BROKEN = """
[tasks.broken]
run = "echo broken"
max_concurrent = "lots"
"""

POLL_DEADLINE = 15.0


@dataclass
class RunningDaemon:
    daemon: Daemon
    process: subprocess.Popen[bytes]
    output: Path

    def log(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def scheduled(tmp_path: Path) -> Iterator[RunningDaemon]:
    """Start `runyard serve` with the usual tasks plus a scheduled one."""
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "runyard.toml"
    config.write_text(CONFIG.format(port=port, data_dir=data_dir) + SCHEDULED, encoding="utf-8")
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
    output = tmp_path / "daemon.log"
    process, url = start_daemon(config, env, output, port)
    daemon = Daemon(url=url, token=TEST_TOKEN, config=config, data_dir=data_dir, env=env)
    yield RunningDaemon(daemon, process, output)
    stop_daemon(process, output)


def api_tasks(daemon: Daemon) -> dict[str, dict[str, object]]:
    response = httpx.get(
        f"{daemon.url}/api/tasks",
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=5.0,
    )
    assert response.status_code == 200, response.text
    return {task["name"]: task for task in response.json()["tasks"]}


def append(config: Path, text: str) -> None:
    with config.open("a", encoding="utf-8") as handle:
        handle.write(text)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def table_row(output: str, name: str) -> str:
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return line
    raise AssertionError(f"no row for {name!r} in:\n{output}")


# ----- tasks, pause, resume ----------------------------------------------------------


def test_tasks_shows_the_schedule_and_next_run(scheduled: RunningDaemon) -> None:
    result = scheduled.daemon.cli("tasks")
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert "SCHEDULE" in header and "NEXT RUN" in header
    assert "*/5 * * * *" in result.stdout
    ticker = table_row(result.stdout, "ticker")
    assert "*/5 * * * *" in ticker
    assert "paused" not in ticker
    assert re.search(r"\d\d:\d\d", ticker.split("*/5 * * * *", 1)[1]), ticker
    hello = table_row(result.stdout, "hello").split()
    assert hello[1:3] == ["-", "-"], hello  # no schedule, no next run


def test_pause_and_resume(scheduled: RunningDaemon) -> None:
    daemon = scheduled.daemon
    paused = daemon.cli("pause", "ticker")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "paused ticker (its schedule fires no more until resumed)"
    assert "paused" in table_row(daemon.cli("tasks").stdout, "ticker")
    assert api_tasks(daemon)["ticker"]["paused"] is True

    resumed = daemon.cli("resume", "ticker")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("resumed ticker; next run at ")
    assert "paused" not in table_row(daemon.cli("tasks").stdout, "ticker")
    assert api_tasks(daemon)["ticker"]["next_run_at"] is not None


def test_pause_of_an_unknown_task_fails(scheduled: RunningDaemon) -> None:
    result = scheduled.daemon.cli("pause", "nope")
    assert result.returncode == 1
    assert "nope" in result.stderr
    assert result.stderr.startswith("runyard: ")
    no_traceback(result)


# ----- reload ----------------------------------------------------------------------


def test_reload_reports_the_added_task(scheduled: RunningDaemon) -> None:
    daemon = scheduled.daemon
    append(daemon.config, ADDED)
    result = daemon.cli("reload")
    assert result.returncode == 0, result.stderr
    assert "added: added" in result.stdout
    listed = daemon.cli("tasks")
    assert listed.returncode == 0, listed.stderr
    assert "0 * * * *" in table_row(listed.stdout, "added")
    assert "added" in api_tasks(daemon)


def test_reload_of_a_broken_config_fails_and_the_daemon_keeps_serving(
    scheduled: RunningDaemon,
) -> None:
    daemon = scheduled.daemon
    append(daemon.config, BROKEN)
    result = daemon.cli("reload")
    assert result.returncode == 1
    no_traceback(result)
    assert "the running config is unchanged" in result.stderr
    assert "max_concurrent" in result.stderr
    assert result.stdout == ""
    tasks = api_tasks(daemon)
    assert "broken" not in tasks
    assert "ticker" in tasks
    run = daemon.cli("run", "hello", "--wait")
    assert run.returncode == 0, run.stderr


def test_sighup_reloads_the_config(scheduled: RunningDaemon) -> None:
    append(scheduled.daemon.config, ADDED)
    scheduled.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + POLL_DEADLINE
    while "reload: added added" not in scheduled.log():
        assert scheduled.process.poll() is None, scheduled.log()
        assert time.monotonic() < deadline, f"no reload after SIGHUP:\n{scheduled.log()}"
        time.sleep(0.1)
    assert "added" in api_tasks(scheduled.daemon)


def test_sighup_with_a_broken_config_keeps_the_daemon_up(scheduled: RunningDaemon) -> None:
    append(scheduled.daemon.config, BROKEN)
    scheduled.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + POLL_DEADLINE
    while "reload refused" not in scheduled.log():
        assert scheduled.process.poll() is None, scheduled.log()
        assert time.monotonic() < deadline, f"no refusal after SIGHUP:\n{scheduled.log()}"
        time.sleep(0.1)
    assert "max_concurrent" in scheduled.log()
    assert "ticker" in api_tasks(scheduled.daemon)
    assert "broken" not in api_tasks(scheduled.daemon)
