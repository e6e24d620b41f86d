"""The `runyard` CLI as a user runs it, against a real daemon."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from runyard_harness import CliRunner, Daemon, OfflineConfig


def _no_traceback(result: Any) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def _run_id(stdout: str) -> str:
    return stdout.splitlines()[0].strip()


def _show(daemon: Daemon, run_id: str) -> dict[str, Any]:
    result = daemon.cli("show", run_id, "--json")
    assert result.returncode == 0, result.stderr
    run: dict[str, Any] = json.loads(result.stdout)
    return run


def _wait_ended(daemon: Daemon, run_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = _show(daemon, run_id)
        if run["status"] == "ended" or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


# ----- validate ---------------------------------------------------------------------


def test_validate_accepts_a_good_config(
    offline_config: OfflineConfig, runyard_cli: CliRunner
) -> None:
    result = runyard_cli("--config", str(offline_config.path), "validate")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{offline_config.path}: OK (4 tasks)\n"


def test_validate_counts_services(tmp_path: Path, runyard_cli: CliRunner) -> None:
    config = tmp_path / "runyard.toml"
    config.write_text(
        '[tasks.x]\nrun = "true"\n[services.web]\nrun = "serve"\n'
        '[services.db]\nrun = "db"\n[services.db.health_check]\ntcp = "127.0.0.1:5432"\n',
        encoding="utf-8",
    )
    result = runyard_cli("--config", str(config), "validate")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: OK (1 task, 2 services)\n"
    assert result.stderr == ""
    listed = json.loads(runyard_cli("--config", str(config), "validate", "--json").stdout)
    assert (listed["tasks"], listed["services"]) == (["x"], ["db", "web"])


def test_validate_names_a_dependency_cycle(tmp_path: Path, runyard_cli: CliRunner) -> None:
    config = tmp_path / "runyard.toml"
    config.write_text(
        '[services.a]\nrun = "x"\ndepends_on = ["b"]\n'
        '[services.b]\nrun = "x"\ndepends_on = ["a"]\n',
        encoding="utf-8",
    )
    result = runyard_cli("--config", str(config), "validate")
    assert result.returncode == 1
    assert "services.a.depends_on: dependency cycle a -> b -> a" in result.stderr
    _no_traceback(result)


def test_validate_names_the_bad_key(tmp_path: Path, runyard_cli: CliRunner) -> None:
    config = tmp_path / "runyard.toml"
    config.write_text('[tasks.x]\nrun = "true"\nmax_concurrent = "lots"\n', encoding="utf-8")
    result = runyard_cli("--config", str(config), "validate")
    assert result.returncode == 1
    assert "tasks.x.max_concurrent" in result.stderr
    assert result.stderr.startswith(f"{config}: ")
    _no_traceback(result)


def test_validate_reports_a_missing_file(tmp_path: Path, runyard_cli: CliRunner) -> None:
    result = runyard_cli("--config", str(tmp_path / "nope.toml"), "validate")
    assert result.returncode == 1
    assert "nope.toml: file not found" in result.stderr
    _no_traceback(result)


# ----- tasks and runs ---------------------------------------------------------------


def test_tasks_lists_the_configured_tasks(daemon: Daemon) -> None:
    result = daemon.cli("tasks")
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout
    assert "Greet someone." in result.stdout
    assert "sleepy" in result.stdout


def test_run_wait_then_logs(daemon: Daemon) -> None:
    result = daemon.cli("run", "hello", "-p", "who=you", "--wait")
    assert result.returncode == 0, result.stderr
    run_id = _run_id(result.stdout)
    assert "success" in result.stderr
    logs = daemon.cli("logs", run_id)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "hello you\n"
    raw = daemon.cli("logs", run_id, "--raw")
    assert raw.returncode == 0, raw.stderr
    assert "hello you" in raw.stdout


def test_run_wait_reports_a_failure(daemon: Daemon) -> None:
    result = daemon.cli("run", "fail", "--wait")
    assert result.returncode == 1
    assert "failed" in result.stderr
    assert "exit code 3" in result.stderr
    _no_traceback(result)
    run = _show(daemon, _run_id(result.stdout))
    assert (run["end_reason"], run["exit_code"]) == ("failed", 3)


def test_stop_a_running_run(daemon: Daemon) -> None:
    started = daemon.cli("run", "sleepy")
    assert started.returncode == 0, started.stderr
    run_id = _run_id(started.stdout)
    deadline = time.monotonic() + 10
    while _show(daemon, run_id)["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = daemon.cli("stop", run_id)
    assert stopped.returncode == 0, stopped.stderr
    assert run_id in stopped.stdout
    assert _wait_ended(daemon, run_id)["end_reason"] == "stopped"
    shown = daemon.cli("show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "stopped" in shown.stdout
    again = daemon.cli("stop", run_id)
    assert again.returncode == 1
    assert "already ended" in again.stderr
    _no_traceback(again)


def test_run_follow_prints_lines_live(daemon: Daemon) -> None:
    process = daemon.popen("run", "counter", "--follow")
    assert process.stdout is not None
    try:
        run_id = process.stdout.readline().strip()
        assert run_id
        assert process.stdout.readline() == "line 1\n"
        # Seen while the run is still going: the CLI prints as lines arrive.
        assert process.poll() is None
        rest = process.stdout.read()
        assert rest == "line 2\nline 3\n"
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    follow = daemon.cli("logs", "-f", run_id)
    assert follow.stdout == "line 1\nline 2\nline 3\n"


def test_runs_lists_and_filters(daemon: Daemon) -> None:
    ok = daemon.cli("run", "hello", "--wait")
    bad = daemon.cli("run", "fail", "--wait")
    ok_id, bad_id = _run_id(ok.stdout), _run_id(bad.stdout)
    listed = daemon.cli("runs")
    assert listed.returncode == 0, listed.stderr
    assert ok_id in listed.stdout and bad_id in listed.stdout
    assert "showing 2 of 2" in listed.stdout
    filtered = daemon.cli("runs", "hello", "--status", "success")
    assert filtered.returncode == 0, filtered.stderr
    assert ok_id in filtered.stdout and bad_id not in filtered.stdout
    assert "showing 1 of 1" in filtered.stdout
    as_json = daemon.cli("runs", "--json", "--limit", "1", "--sort", "task_name", "--asc")
    body = json.loads(as_json.stdout)
    assert body["total"] == 2
    assert [run["task_name"] for run in body["runs"]] == ["fail"]


def test_runs_reports_a_bad_filter(daemon: Daemon) -> None:
    result = daemon.cli("runs", "--status", "bogus")
    assert result.returncode == 1
    assert result.stderr.startswith("runyard: ")
    assert "query.status" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_unknown_param_is_reported_by_the_daemon(daemon: Daemon) -> None:
    result = daemon.cli("run", "hello", "-p", "whom=x")
    assert result.returncode == 1
    assert "whom" in result.stderr
    _no_traceback(result)


def test_param_without_equals_is_one_line(daemon: Daemon) -> None:
    result = daemon.cli("run", "hello", "-p", "novalue")
    assert result.returncode in (1, 2)
    assert "novalue" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    _no_traceback(result)


# ----- reaching the daemon ----------------------------------------------------------


def test_daemon_not_running(offline_config: OfflineConfig, runyard_cli: CliRunner) -> None:
    result = runyard_cli("--config", str(offline_config.path), "tasks", RUNYARD_TOKEN="x")
    assert result.returncode == 1
    assert result.stderr == (
        f"runyard: cannot reach the daemon at {offline_config.url} (from [daemon] host and port "
        f"in {offline_config.path}): is `runyard serve` running?\n"
    )


def test_bad_token(daemon: Daemon) -> None:
    result = daemon.cli("tasks", env={**daemon.env, "RUNYARD_TOKEN": "wrong"})
    assert result.returncode == 1
    assert result.stderr == f"runyard: the daemon at {daemon.url} refused $RUNYARD_TOKEN\n"
    _no_traceback(result)


def test_url_option_and_token_file(daemon: Daemon, tmp_path: Path, runyard_cli: CliRunner) -> None:
    data_dir = tmp_path / "elsewhere"
    data_dir.mkdir()
    (data_dir / "token").write_text(daemon.token + "\n", encoding="utf-8")
    result = runyard_cli("--url", daemon.url, "--data-dir", str(data_dir), "tasks")
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout


def test_run_wait_gives_up_at_the_timeout(daemon: Daemon) -> None:
    result = daemon.cli("run", "sleepy", "--wait", "--timeout", "1")
    assert result.returncode == 1
    run_id = _run_id(result.stdout)
    assert f"runyard: run {run_id} had not ended after 1s" in result.stderr
    assert daemon.cli("stop", run_id).returncode == 0


def test_serve_refuses_a_bad_config(tmp_path: Path, runyard_cli: CliRunner) -> None:
    config = tmp_path / "runyard.toml"
    config.write_text("[daemon]\nport = 0\nbogus = 1\n", encoding="utf-8")
    result = runyard_cli("--config", str(config), "serve")
    assert result.returncode == 2
    problems = result.stderr.splitlines()
    assert len(problems) == 2
    assert all(line.startswith(f"{config}: ") for line in problems)
    assert any("daemon.port" in line for line in problems)
    _no_traceback(result)
