"""Retries, times and `--json` from the CLI, and `runyard output` inside a run.

The daemon here runs with a PATH that lacks the directory of the `runyard`
command, as `make run` starts it (`.venv/bin/runyard serve` from a shell whose
PATH does not hold `.venv/bin`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runyard_harness import TEST_TOKEN, Daemon, cli_env, free_port, start_daemon, stop_daemon

CONFIG = """\
[daemon]
port = {port}
data_dir = "{data_dir}"

[tasks.third-time-lucky]
run = 'echo "attempt $RUNYARD_RETRY_ATTEMPT"; [ "$RUNYARD_RETRY_ATTEMPT" -ge 2 ]'
retry_attempts = 2
retry_delay = "300ms"

[tasks.never]
run = 'echo "no luck" >&2; exit 4'
retry_attempts = 1
retry_delay = "200ms"

[tasks.quick]
run = "echo done"

[tasks.ticker]
run = "true"
cron = "0 0 1 1 *"

[tasks.writes-output]
run = '''
printf 'name,price\\na,1\\n' | runyard output sheet
printf '["b", 2]\\n' | "$RUNYARD_BIN" output sheet --format jsonl
'''
"""

# `2026-11-24 15:14:51 UTC (2 min ago)`: date, time, zone, and how long ago.
WHEN = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \S+ \((now|\d+ s ago|in \d+ s)\)"
ONE_YEAR_AHEAD = r"\d{4}-01-01 00:00:00 \S+ \(in \d+ (d|h)\b"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("attempts")
    port = free_port()
    config = home / "runyard.toml"
    config.write_text(CONFIG.format(port=port, data_dir=home / "data"), encoding="utf-8")
    # Only the system's directories: not the one `runyard` was installed in.
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN, PATH="/usr/bin:/bin", TZ="UTC")
    assert not any((Path(entry) / "runyard").exists() for entry in env["PATH"].split(os.pathsep)), (
        "the test needs a PATH without runyard on it"
    )
    output = home / "daemon.log"
    process, url = start_daemon(config, env, output, port)
    yield Daemon(url=url, token=TEST_TOKEN, config=config, data_dir=home / "data", env=env)
    stop_daemon(process, output)


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    result = daemon.cli(*args)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def show(daemon: Daemon, run_id: str) -> dict[str, Any]:
    result = cli(daemon, "show", run_id, "--json")
    assert result.returncode == 0, result.stderr
    run: dict[str, Any] = json.loads(result.stdout)
    return run


# ----- retries ----------------------------------------------------------------------


def test_wait_follows_the_retries_to_the_last_attempt(daemon: Daemon) -> None:
    result = cli(daemon, "run", "third-time-lucky", "--wait")
    # It used to exit 1 with the first attempt, although the last one succeeded.
    assert result.returncode == 0, result.stderr
    first = result.stdout.strip()
    lines = result.stderr.splitlines()
    assert len(lines) == 5, lines
    assert re.fullmatch(
        rf"run {first} of third-time-lucky: ended failed \(exit code 1\) after \d+(ms|\.\ds)",
        lines[0],
    )
    assert lines[1].startswith("retrying: attempt 2 of 3 is run ")
    assert " ended failed (exit code 1) " in lines[2]
    assert lines[3].startswith("retrying: attempt 3 of 3 is run ")
    assert " ended success (exit code 0) " in lines[4]


def test_wait_exits_with_the_outcome_of_the_last_attempt(daemon: Daemon) -> None:
    result = cli(daemon, "run", "never", "--wait", "--json")
    assert result.returncode == 1
    runs = json.loads(result.stdout)["runs"]
    assert [run["retry_attempt"] for run in runs] == [0, 1]
    assert [run["end_reason"] for run in runs] == ["failed", "failed"]
    assert runs[1]["retry_of_run_id"] == runs[0]["id"]


def test_a_retry_says_it_waited_out_its_delay(daemon: Daemon) -> None:
    result = cli(daemon, "run", "third-time-lucky", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [run["end_reason"] for run in runs] == ["failed", "failed", "success"]
    retry = show(daemon, runs[1]["id"])
    assert (
        "Waited out the retry delay of 300ms (retry_delay), then started." in (retry["description"])
    )
    assert "in the queue" not in retry["description"]


def test_follow_prints_the_log_of_every_attempt(daemon: Daemon) -> None:
    result = cli(daemon, "run", "third-time-lucky", "--follow")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["attempt 0", "attempt 1", "attempt 2"]


# ----- time and durations -------------------------------------------------------------


def test_show_gives_times_with_date_zone_and_age_and_one_duration(daemon: Daemon) -> None:
    run_id = cli(daemon, "run", "quick", "--wait").stdout.strip()
    result = cli(daemon, "show", run_id)
    assert result.returncode == 0, result.stderr
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    for name in ("created_at", "start_at", "end_at"):
        assert re.fullmatch(WHEN, rows[name].strip()), rows[name]
    assert "duration_ms" not in rows
    assert re.fullmatch(r"\d+ms|\d+\.\ds", rows["duration"].strip()), rows["duration"]


def test_tasks_show_the_next_run_with_date_zone_and_how_far(daemon: Daemon) -> None:
    result = cli(daemon, "tasks")
    assert result.returncode == 0, result.stderr
    [ticker] = [line for line in result.stdout.splitlines() if line.startswith("ticker ")]
    assert re.search(ONE_YEAR_AHEAD, ticker), ticker


# ----- --json -----------------------------------------------------------------------


def test_every_command_that_prints_data_takes_json(daemon: Daemon) -> None:
    triggered = json.loads(cli(daemon, "run", "quick", "--json").stdout)
    [run] = triggered["runs"]
    assert run["task_name"] == "quick"
    paused = json.loads(cli(daemon, "pause", "ticker", "--json").stdout)
    assert (paused["name"], paused["paused"]) == ("ticker", True)
    resumed = json.loads(cli(daemon, "resume", "ticker", "--json").stdout)
    assert resumed["paused"] is False and resumed["next_run_at"]
    ended = json.loads(cli(daemon, "run", "quick", "--wait", "--json").stdout)["runs"][-1]
    lines = cli(daemon, "logs", ended["id"], "--json").stdout.splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["done"]
    assert set(json.loads(lines[0])) == {"n", "at", "stream", "text"}
    stopped = cli(daemon, "stop", ended["id"], "--json")
    assert stopped.returncode == 1  # it had ended: the daemon's 409, one line
    valid = json.loads(cli(daemon, "validate", "--json").stdout)
    assert valid["valid"] is True and "quick" in valid["tasks"]
    assert json.loads(cli(daemon, "reload", "--json").stdout)["added"] == []


def test_json_and_follow_are_refused_together(daemon: Daemon) -> None:
    result = cli(daemon, "run", "quick", "--follow", "--json")
    assert result.returncode == 2
    assert result.stderr == (
        "runyard: --json and --follow both write to stdout: use --wait --json\n"
    )


# ----- inside a run -------------------------------------------------------------------


def test_runyard_output_works_inside_a_run(daemon: Daemon) -> None:
    result = cli(daemon, "run", "writes-output", "--wait", "--json")
    [run] = json.loads(result.stdout)["runs"]
    # It used to fail with `runyard: not found` (exit 127).
    assert result.returncode == 0, show(daemon, run["id"])["description"]
    assert show(daemon, run["id"])["output_data"] == {
        "sheet": [["name", "price"], ["a", "1"], ["b", "2"]]
    }
