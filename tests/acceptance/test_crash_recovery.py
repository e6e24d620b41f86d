"""kill -9 of the daemon with runs in flight, then a restart: nothing is lost."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from runyard_harness import free_port, until

TOKEN = "crash-test-token"


class Daemon:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runyard", "--config", str(self.config), "serve"],
            env={**os.environ, "RUNYARD_TOKEN": TOKEN},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def healthy() -> bool:
            assert self.process is not None and self.process.poll() is None, "daemon exited"
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        until(healthy)

    def stop(self, sig: int) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Daemon, httpx.Client, Path]]:
    port = free_port()
    pids = tmp_path / "pids"
    pids.mkdir()
    config = tmp_path / "runyard.toml"
    config.write_text(
        f"""
[daemon]
port = {port}
max_concurrent_runs = 2
shutdown_timeout = "10s"

[tasks.slow]
run = "echo $$ > {pids}/$RUNYARD_RUN_ID; echo started; sleep 30"
max_concurrent = 2
max_queued = 10
""",
        encoding="utf-8",
    )
    daemon = Daemon(config)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    yield daemon, client, pids
    client.close()
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.stop(signal.SIGTERM)
    # Processes orphaned by the kill -9 keep running in their own groups: end them.
    for pidfile in pids.iterdir():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its parent has not reaped it yet


def _runs(client: httpx.Client) -> dict[str, dict[str, Any]]:
    body = client.get("/api/tasks/slow/runs", params={"limit": 100}).json()
    return {run["id"]: run for run in body["runs"]}


def test_kill_9_then_restart(setup: tuple[Daemon, httpx.Client, Path]) -> None:
    daemon, client, pids = setup
    daemon.start(str(client.base_url).rstrip("/"))
    ids = []
    for _ in range(4):
        answer = client.post("/api/tasks/slow/run")
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
    until(lambda: len(list(pids.iterdir())) == 2)
    before = _runs(client)
    assert [before[i]["status"] for i in ids] == ["running", "running", "pending", "pending"]

    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    daemon.start(str(client.base_url).rstrip("/"))

    after = _runs(client)
    for run_id in ids[:2]:
        assert after[run_id]["status"] == "ended"
        assert after[run_id]["end_reason"] == "crashed"
        assert after[run_id]["exit_code"] == -2
        # The process the dead daemon left behind does not live on.
        assert "were killed" in after[run_id]["description"]
        pid = int((pids / run_id).read_text())
        until(lambda pid=pid: not _alive(pid), timeout=5)
    # The queued ones start in the new daemon.
    until(lambda: all(_runs(client)[i]["status"] == "running" for i in ids[2:]))

    # A graceful stop leaves nothing running either.
    assert daemon.stop(signal.SIGTERM) == 0
    daemon.process = None
    daemon.start(str(client.base_url).rstrip("/"))
    final = _runs(client)
    assert all(final[run_id]["status"] == "ended" for run_id in ids)
    for run_id in ids[2:]:
        assert final[run_id]["end_reason"] == "daemon_stopped"
