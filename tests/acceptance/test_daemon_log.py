"""The daemon says what it does: its log, read from a real daemon, in text and in JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from runyard_harness import (
    TEST_TOKEN,
    cli_env,
    free_port,
    run_cli,
    stop_process,
    until,
    wait_for_health,
)

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"

[tasks.hello]
run = 'echo hello'

[tasks.fail]
run = 'exit 3'
"""

EVERY_SECOND = """
[tasks.ticker]
run = 'true'
cron = "* * * * * *"
catch_up = "latest"
"""


@dataclass
class LoggedDaemon:
    process: subprocess.Popen[bytes]
    url: str
    config: Path
    output: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def lines(self, containing: str) -> list[str]:
        return [line for line in self.log().splitlines() if containing in line]

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        until(lambda: text in self.log(), timeout)
        return self.log()

    def trigger(self, task: str) -> str:
        response = httpx.post(
            f"{self.url}/api/tasks/{task}/run",
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
            timeout=10.0,
        )
        assert response.status_code == 201, response.text
        run_id: str = response.json()["id"]
        return run_id

    def stop(self) -> None:
        assert stop_process(self.process) == 0, self.log()


def serve(tmp_path: Path, *args: str, extra: str = "", port: int | None = None) -> LoggedDaemon:
    """Start `runyard serve *args` with its output (stdout and stderr) in a file."""
    port = port or free_port()
    config = tmp_path / "runyard.toml"
    if not config.exists():
        config.write_text(
            CONFIG.format(port=port, data_dir=tmp_path / "data") + extra, encoding="utf-8"
        )
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
    output = tmp_path / f"daemon-{time.monotonic_ns()}.log"
    listen = port
    if "--port" in args:
        listen = int(args[args.index("--port") + 1])
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "runyard", "--config", str(config), "serve", *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{listen}"
    problem = wait_for_health(url, process)
    if problem is not None:
        stop_process(process)
        raise AssertionError(f"{problem}:\n{output.read_text(errors='replace')}")
    return LoggedDaemon(process, url, config, output, env)


@pytest.fixture
def text_daemon(tmp_path: Path) -> Iterator[LoggedDaemon]:
    daemon = serve(tmp_path)
    yield daemon
    daemon.stop()


@pytest.fixture
def json_daemon(tmp_path: Path) -> Iterator[LoggedDaemon]:
    daemon = serve(tmp_path, "--log-format", "json")
    yield daemon
    daemon.stop()


def json_lines(daemon: LoggedDaemon) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.log().splitlines() if line.strip()]


def test_text_log_has_the_start_up_summary_and_a_line_per_run_start_and_end(
    text_daemon: LoggedDaemon, tmp_path: Path
) -> None:
    log = text_daemon.wait_for("runyard listening on")
    (summary,) = text_daemon.lines("starting:")
    assert "runyard 0.1.0 starting" in summary
    assert f"config {tmp_path / 'runyard.toml'}" in summary
    assert f"data dir {tmp_path / 'data'}" in summary
    assert f"database sqlite:///{tmp_path / 'data' / 'runyard.db'}" in summary
    assert "2 tasks" in summary
    assert f"listen URL {text_daemon.url}" in summary
    assert f"runyard listening on {text_daemon.url}" in log

    ok = text_daemon.trigger("hello")
    failed = text_daemon.trigger("fail")
    text_daemon.wait_for(f"run {failed} of fail ended")
    text_daemon.wait_for(f"run {ok} of hello ended")
    (started,) = text_daemon.lines(f"run {ok} of hello started")
    assert "INFO runyard.runs:" in started
    assert "(trigger api)" in started
    (ended,) = text_daemon.lines(f"run {ok} of hello ended")
    assert "ended: success, exit code 0 after " in ended
    assert " ms" in ended or " s" in ended
    (failure,) = text_daemon.lines(f"run {failed} of fail ended")
    assert "ended: failed, exit code 3" in failure
    assert "Traceback" not in text_daemon.log()


def test_json_log_is_one_object_per_line_with_the_runs_fields(json_daemon: LoggedDaemon) -> None:
    json_daemon.wait_for("runyard listening on")
    run_id = json_daemon.trigger("hello")
    json_daemon.wait_for(f"run {run_id} of hello ended")
    entries = json_lines(json_daemon)
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    (summary,) = [e for e in entries if "starting:" in e["message"]]
    assert summary["logger"] == "runyard.daemon"
    assert summary["tasks"] == 2
    assert summary["url"] == json_daemon.url
    assert summary["database"].startswith("sqlite:///")
    (started,) = [e for e in entries if e.get("run_id") == run_id and "started" in e["message"]]
    assert (started["task"], started["trigger"], started["level"]) == ("hello", "api", "info")
    (ended,) = [e for e in entries if e.get("run_id") == run_id and "ended" in e["message"]]
    assert (ended["task"], ended["outcome"], ended["exit_code"]) == ("hello", "success", 0)
    run = httpx.get(
        f"{json_daemon.url}/api/runs/{run_id}",
        headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        timeout=10.0,
    ).json()
    took = datetime.fromisoformat(run["end_at"]) - datetime.fromisoformat(run["start_at"])
    assert ended["duration_ms"] == round(took.total_seconds() * 1000, 1), (ended, run)


def test_reloads_are_logged_with_what_changed_or_why_they_were_refused(
    text_daemon: LoggedDaemon,
) -> None:
    text_daemon.wait_for("runyard listening on")
    text = text_daemon.config.read_text(encoding="utf-8")
    text_daemon.config.write_text(text + "\n[tasks.added]\nrun = 'true'\n", encoding="utf-8")
    done = run_cli("--config", str(text_daemon.config), "reload", env=text_daemon.env)
    assert done.returncode == 0, done.stderr
    text_daemon.wait_for("reload: added added")
    text_daemon.config.write_text(text + "\n[tasks.bad]\nrun = 1\n", encoding="utf-8")
    refused = run_cli("--config", str(text_daemon.config), "reload", env=text_daemon.env)
    assert refused.returncode == 1
    log = text_daemon.wait_for("reload refused")
    (line,) = text_daemon.lines("reload refused")
    assert "WARNING runyard.daemon:" in line and "tasks.bad.run" in line, log


def test_a_schedule_catch_up_is_logged(tmp_path: Path) -> None:
    port = free_port()
    daemon = serve(tmp_path, extra=EVERY_SECOND, port=port)
    try:
        # The first tick fired and recorded: from now on, ticks can be missed.
        daemon.wait_for("of ticker ended")
    finally:
        daemon.stop()
    time.sleep(7)  # more than the 5 s a late tick is still fired in
    again = serve(tmp_path, port=port)
    try:
        again.wait_for("missed tick")
        (line,) = again.lines("missed tick")
        assert "INFO runyard.scheduler: task ticker:" in line
        assert "recorded as run" in line
        assert "catch_up = latest: 1 catch-up run" in line
    finally:
        again.stop()


def test_the_access_log_is_off_by_default_and_never_logs_query_strings(tmp_path: Path) -> None:
    port = free_port()
    quiet = serve(tmp_path, port=port)
    try:
        httpx.get(f"{quiet.url}/health", timeout=5.0)
        quiet.wait_for("runyard listening on")
        assert not quiet.lines('"GET /health"')
    finally:
        quiet.stop()
    logged = serve(tmp_path, "--access-log", port=port)
    try:
        httpx.get(f"{logged.url}/health?token=s3cret-in-a-query", timeout=5.0)
        logged.wait_for('"GET /health" 200')
        # The start-up probes of /health are there too.
        lines = logged.lines('"GET /health" 200')
        assert lines and all("INFO runyard.access: 127.0.0.1" in line for line in lines)
        assert "s3cret-in-a-query" not in logged.log()
    finally:
        logged.stop()


def test_log_level_warning_leaves_out_the_run_lines(tmp_path: Path) -> None:
    daemon = serve(tmp_path, "--log-level", "warning")
    try:
        run_id = daemon.trigger("hello")
        until(lambda: run_state(daemon, run_id) == "ended")
        assert run_id not in daemon.log()
        assert "listening on" not in daemon.log()
    finally:
        daemon.stop()


def run_state(daemon: LoggedDaemon, run_id: str) -> str:
    response = httpx.get(
        f"{daemon.url}/api/runs/{run_id}",
        headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        timeout=5.0,
    )
    status: str = response.json()["status"]
    return status


def test_host_and_port_on_the_command_line_win_over_the_config(tmp_path: Path) -> None:
    configured = free_port()
    chosen = free_port()
    daemon = serve(tmp_path, "--host", "127.0.0.1", "--port", str(chosen), port=configured)
    try:
        daemon.wait_for(f"runyard listening on http://127.0.0.1:{chosen}")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{configured}/health", timeout=2.0)
    finally:
        daemon.stop()


def test_a_bad_log_format_is_refused_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "runyard.toml"
    config.write_text(CONFIG.format(port=free_port(), data_dir=tmp_path / "data"), encoding="utf-8")
    done = run_cli("--config", str(config), "serve", "--log-format", "xml", env=cli_env())
    assert done.returncode == 2
    assert "xml" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()
