"""Schedules in a real daemon: ticks fire, a long downtime is caught up, reloads are safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from runyard_harness import free_port, until

from runyard.domain.queries import RunQuery
from runyard.store import RunStore

TOKEN = "schedule-test-token"


class Daemon:
    """`runyard serve` as a subprocess, with an HTTP client holding the token."""

    def __init__(self, tmp_path: Path, tasks: str) -> None:
        self.port = free_port()
        self.data_dir = tmp_path / "data"
        self.config = tmp_path / "runyard.toml"
        self.write_config(tasks)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self, tasks: str) -> None:
        self.config.write_text(
            f'[daemon]\nport = {self.port}\ndata_dir = "{self.data_dir}"\n'
            f'max_concurrent_runs = 16\n\n[scheduler]\ntimezone = "UTC"\n\n{tasks}',
            encoding="utf-8",
        )

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runyard", "--config", str(self.config), "serve"],
            env={**env, "RUNYARD_TOKEN": TOKEN},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def healthy() -> bool:
            assert self.process is not None and self.process.poll() is None, "daemon exited"
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        until(healthy)

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def runs(self, task: str) -> list[dict[str, Any]]:
        answer = self.client.get(f"/api/tasks/{task}/runs", params={"limit": 1000})
        assert answer.status_code == 200, answer.text
        runs: list[dict[str, Any]] = answer.json()["runs"]
        return runs


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[[str], Daemon]]:
    made: list[Daemon] = []

    def make(tasks: str) -> Daemon:
        daemon = Daemon(tmp_path, tasks)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.process is not None:
            daemon.stop()
        daemon.client.close()


def test_an_every_second_task_fires_once_per_tick(make_daemon: Callable[[str], Daemon]) -> None:
    daemon = make_daemon('[tasks.pulse]\nrun = "true"\ncron = "* * * * * *"\nmax_concurrent = 4\n')
    daemon.start()
    until(lambda: len(daemon.runs("pulse")) >= 3, timeout=15)
    assert daemon.stop() == 0
    # The daemon is gone; read what it stored.
    store = RunStore.open(f"sqlite:///{daemon.data_dir / 'runyard.db'}")
    try:
        stored, _ = store.list_runs(RunQuery(task_name="pulse", limit=1000))
    finally:
        store.close()
    assert all(run.triggered_by.value == "cron" for run in stored)
    created = sorted(run.created_at.replace(microsecond=0) for run in stored)
    assert len(created) == len(set(created)), "a tick fired twice"


def test_three_days_down_with_catch_up_all(make_daemon: Callable[[str], Daemon]) -> None:
    daemon = make_daemon(
        '[tasks.minutely]\nrun = "true"\ncron = "* * * * *"\ncatch_up = "all"\n'
        "max_catch_up_runs = 100\nmax_concurrent = 8\nmax_queued = 1000\n"
    )
    # The task last fired three days ago (as a daemon stopped then would have left it).
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    store = RunStore.open(f"sqlite:///{daemon.data_dir / 'runyard.db'}")
    store.set_last_ticks({"minutely": three_days_ago}, three_days_ago)
    store.close()
    daemon.start()
    # Responsive while it catches up: every probe answers.
    for _ in range(20):
        assert httpx.get(f"{daemon.url}/health", timeout=2).status_code == 200
        time.sleep(0.05)
    until(lambda: len(daemon.runs("minutely")) >= 101, timeout=30)
    runs = daemon.runs("minutely")
    missed = [run for run in runs if run.get("end_reason") == "missed"]
    assert len(missed) == 1
    count = int(missed[0]["description"].split("\n")[-1].split()[0])
    assert 4318 <= count <= 4321
    catch_up = [run for run in runs if "Catch-up run" in run["description"]]
    assert len(catch_up) == 100  # capped by max_catch_up_runs


def test_reloads_never_touch_runs_in_flight(make_daemon: Callable[[str], Daemon]) -> None:
    daemon = make_daemon('[tasks.slow]\nrun = "sleep 2; echo old definition"\n')
    daemon.start()
    run_id = daemon.client.post("/api/tasks/slow/run").json()["id"]
    # A broken file: refused whole, every problem listed, the run goes on.
    daemon.config.write_text(daemon.config.read_text() + "\n[tasks.broken]\nrun = 5\n")
    refused = daemon.client.post("/api/daemon/reload")
    assert refused.status_code == 422
    assert any("tasks.broken.run" in error["message"] for error in refused.json()["errors"])
    # A good file that changes the task while its run is in flight.
    daemon.write_config('[tasks.slow]\nrun = "echo new definition"\n')
    applied = daemon.client.post("/api/daemon/reload")
    assert applied.status_code == 200, applied.text
    assert applied.json()["changed"] == ["slow"]
    ended = daemon.client.post(
        "/api/tasks/slow/run", params={"wait": "true", "wait_timeout": 30}
    ).json()
    assert ended["end_reason"] == "success"
    until(lambda: daemon.client.get(f"/api/runs/{run_id}").json()["status"] == "ended")
    first = daemon.client.get(f"/api/runs/{run_id}/log/raw").text
    second = daemon.client.get(f"/api/runs/{ended['id']}/log/raw").text
    assert "old definition" in first
    assert "new definition" in second
