"""One daemon per data dir: a second `serve` refuses at once and touches nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from runyard_harness import (
    TEST_TOKEN,
    cli_env,
    free_port,
    start_daemon,
    stop_daemon,
    until,
)

# A second daemon must give up well within this; it waits for nothing.
REFUSAL_DEADLINE = 30.0

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"

[tasks.slow]
run = 'sleep 4; printf "a\\n1\\n" > "$RUNYARD_OUTPUT_DIR/result.csv"'

[tasks.writes]
run = 'printf "b\\n2\\n" > "$RUNYARD_OUTPUT_DIR/result.csv"'

[tasks.sleepy]
run = 'sleep 120'
"""


def write_config(path: Path, port: int, data_dir: Path) -> Path:
    path.write_text(CONFIG.format(port=port, data_dir=data_dir), encoding="utf-8")
    return path


def serve_once(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a `serve` that is expected to refuse to start; return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "runyard", "--config", str(config), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=REFUSAL_DEADLINE,
    )


def api(url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=10.0
    )


def trigger(client: httpx.Client, task: str) -> str:
    response = client.post(f"/api/tasks/{task}/run")
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


def run_status(client: httpx.Client, run_id: str) -> dict[str, object]:
    response = client.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.text
    run: dict[str, object] = response.json()
    return run


def wait_for_end(client: httpx.Client, run_id: str) -> dict[str, object]:
    until(lambda: run_status(client, run_id)["status"] == "ended", timeout=30)
    return run_status(client, run_id)


@pytest.fixture
def env() -> dict[str, str]:
    return cli_env(RUNYARD_TOKEN=TEST_TOKEN)


@pytest.fixture
def first(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    config = write_config(tmp_path / "first.toml", port, tmp_path / "data")
    output = tmp_path / "first.log"
    process, url = start_daemon(config, env, output, port)
    yield process, url
    stop_daemon(process, output)


def test_a_run_in_flight_survives_a_second_serve_on_the_same_data_dir(
    tmp_path: Path, env: dict[str, str], first: tuple[subprocess.Popen[bytes], str]
) -> None:
    process, url = first
    with api(url) as client:
        slow = trigger(client, "slow")
        until(lambda: run_status(client, slow)["status"] == "running")

        # Another port, so only the data dir stands between the two daemons.
        second_port = free_port()
        second = write_config(tmp_path / "second.toml", second_port, tmp_path / "data")
        refused = serve_once(second, env)

        assert refused.returncode != 0
        message = refused.stderr
        assert str(tmp_path / "data") in message, message
        assert f"pid {process.pid}" in message, message
        assert "Traceback" not in message
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{second_port}/health", timeout=2.0)

        ended = wait_for_end(client, slow)
        assert (ended["end_reason"], ended["exit_code"]) == ("success", 0), ended
        detail = client.get(f"/api/runs/{slow}").json()
        assert detail["output_data"] == {"result": [["a"], ["1"]]}
        # The first daemon's spare run directories are all there: the next run writes fine.
        writes = wait_for_end(client, trigger(client, "writes"))
        assert writes["end_reason"] == "success", writes


def processes_of_run(run_id: str) -> list[int]:
    """Return the pids whose environment carries RUNYARD_RUN_ID=run_id."""
    marker = f"RUNYARD_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry))
    return found


def stored_status(data_dir: Path, run_id: str) -> str:
    with sqlite3.connect(data_dir / "runyard.db") as db:
        row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    assert row is not None
    status: str = row[0]
    return status


def test_a_daemon_that_cannot_bind_its_port_touches_nothing_in_its_data_dir(
    tmp_path: Path, env: dict[str, str]
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    config = write_config(tmp_path / "runyard.toml", port, data_dir)
    output = tmp_path / "daemon.log"
    process, url = start_daemon(config, env, output, port)
    with api(url) as client:
        run_id = trigger(client, "sleepy")
        until(lambda: run_status(client, run_id)["status"] == "running")
    until(lambda: bool(processes_of_run(run_id)))
    # The start is committed shortly after the spawn (not awaited): wait for
    # it, so what the dead daemon leaves behind is known.
    until(lambda: stored_status(data_dir, run_id) == "running")
    # The daemon dies without a word; its run's process lives on in its own group.
    process.kill()
    process.wait()
    survivors = processes_of_run(run_id)
    work_before = sorted(path.name for path in (data_dir / "work").iterdir())

    busy = socket.socket()
    busy.bind(("127.0.0.1", port))
    busy.listen()
    try:
        refused = serve_once(config, env)
        # Recovery never ran: the run is as the dead daemon left it, its
        # process is alive, its run directories are where they were.
        assert stored_status(data_dir, run_id) == "running"
        assert processes_of_run(run_id) == survivors
        assert sorted(path.name for path in (data_dir / "work").iterdir()) == work_before
        assert refused.returncode != 0
        assert "cannot listen" in refused.stderr, refused.stderr
        assert str(port) in refused.stderr, refused.stderr
    finally:
        busy.close()
        for pid in processes_of_run(run_id):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
