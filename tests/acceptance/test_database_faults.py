"""A real daemon while its database goes away: nothing accepted is lost, no run is stuck.

PostgreSQL: a private cluster (never the shared server) restarted, then
stopped for a while, under a flow of REST and v3 triggers. SQLite: another
connection holds the write lock longer than busy_timeout.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from runyard_harness import (
    TEST_TOKEN,
    cli_env,
    free_port,
    run_cli,
    start_daemon,
    stop_daemon,
    until,
)

PG_VERSION = "15"
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
max_concurrent_runs = 8

[tasks.hello]
run = '{script}'
max_concurrent = 8
max_queued = 100000

[accounts.acme]
tasks = ["hello"]
rate_limit_per_minute = 1000000
"""


@dataclass
class Answer:
    kind: str  # "rest" or "v3"
    status: int
    headers: httpx.Headers
    body: Any


@dataclass
class Daemon:
    url: str
    process: subprocess.Popen[bytes]
    key: str
    data_dir: Path
    output: Path
    http: httpx.Client

    def rest_trigger(self) -> Answer:
        response = self.http.post(f"{self.url}/api/tasks/hello/run", headers=AUTH)
        return Answer("rest", response.status_code, response.headers, _json(response))

    def v3_trigger(self) -> Answer:
        response = self.http.post(
            f"{self.url}/api/v3/trigger", json={"key": self.key, "name": "hello"}
        )
        return Answer("v3", response.status_code, response.headers, _json(response))

    def health(self) -> httpx.Response:
        return self.http.get(f"{self.url}/health")

    def total(self, query: str = "") -> int:
        response = self.http.get(f"{self.url}/api/runs?limit=1&{query}", headers=AUTH)
        assert response.status_code == 200, response.text
        total: int = response.json()["total"]
        return total

    def runs(self) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.url}/api/runs?limit=1000", headers=AUTH)
        assert response.status_code == 200, response.text
        runs: list[dict[str, Any]] = response.json()["runs"]
        return runs


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except json.JSONDecodeError:
        return response.text


@dataclass
class Flow:
    """Client threads triggering in a loop, alternating REST and v3, until stopped."""

    daemon: Daemon
    clients: int = 4
    pause: float = 0.1
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), "a client never got its answer"

    def _client(self, number: int) -> None:
        rest = number % 2 == 0
        while not self._stop.is_set():
            answer = self.daemon.rest_trigger() if rest else self.daemon.v3_trigger()
            self.answers.append(answer)
            rest = not rest
            time.sleep(self.pause)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def _daemon(workdir: Path, script: str, **env: str) -> Iterator[Daemon]:
    port = free_port()
    data_dir = workdir / "data"
    config = workdir / "runyard.toml"
    config.write_text(CONFIG.format(port=port, data_dir=data_dir, script=script), encoding="utf-8")
    environ = cli_env(RUNYARD_TOKEN=TEST_TOKEN, **env)
    output = workdir / "daemon.log"
    process, url = start_daemon(config, environ, output, port)
    try:
        # Keys are made through the daemon: before it runs there is no database.
        created = run_cli(
            "--config", str(config), "keys", "create", "--account", "acme", "--label", "t",
            env=environ,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        with httpx.Client(timeout=60) as http:
            yield Daemon(url, process, created.stdout.strip(), data_dir, output, http)
    finally:
        stop_daemon(process, output)


# ----- PostgreSQL ----------------------------------------------------------------------


@dataclass
class Cluster:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, action: str) -> None:
        result = subprocess.run(
            ["pg_ctlcluster", PG_VERSION, self.name, action],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"pg_ctlcluster {action}: {result.stderr}"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of this test's own, on a free port, dropped at the end."""
    name = f"runyard_faults_{uuid.uuid4().hex[:8]}"
    port = free_port()
    created = subprocess.run(
        ["pg_createcluster", PG_VERSION, name, "-p", str(port), "--", "--auth=trust"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Never skipped: PostgreSQL 15 is part of this project's test machine.
    assert created.returncode == 0, f"pg_createcluster failed: {created.stderr}"
    try:
        private = Cluster(name, port)
        private.ctl("start")
        yield private
    finally:
        subprocess.run(
            ["pg_dropcluster", "--stop", PG_VERSION, name], capture_output=True, timeout=120
        )


@pytest.fixture
def pg_daemon(workdir: Path, cluster: Cluster) -> Iterator[tuple[Daemon, Cluster]]:
    for daemon in _daemon(workdir, "echo hi", RUNYARD_DATABASE_URL=cluster.url):
        yield daemon, cluster


def _check_unavailable(answer: Answer) -> None:
    """A 503 says when to try again, in the shape of its API."""
    assert answer.headers.get("Retry-After", "").isdigit(), answer
    if answer.kind == "rest":
        assert answer.headers["content-type"].startswith("application/problem+json"), answer
        assert answer.body["status"] == 503 and "unavailable" in answer.body["detail"], answer
    else:
        assert answer.body["status"] == "error", answer
        assert "unavailable" in answer.body["message"], answer


def _accepted(answer: Answer) -> bool:
    if answer.kind == "rest":
        return answer.status == 201
    return answer.status == 200 and (
        "OPEN LINK IN BROWSER" in answer.body or answer.body.get("status") == "queued"
    )


def test_postgres_restart_and_outage_under_a_flow_of_triggers(
    pg_daemon: tuple[Daemon, Cluster],
) -> None:
    daemon, cluster = pg_daemon
    flow = Flow(daemon)
    flow.start()
    try:
        time.sleep(2)
        cluster.ctl("restart")
        time.sleep(3)
        # Now an outage longer than a trigger waits for the database.
        cluster.ctl("stop")
        until(lambda: daemon.health().status_code == 503, timeout=20)
        health = daemon.health()
        assert health.headers["Retry-After"].isdigit()
        assert health.json()["status"] == "unavailable"
        assert health.json()["reason"].startswith("database unavailable"), health.json()
        assert health.json()["checks"]["database"] != "ok"
        read = daemon.http.get(f"{daemon.url}/api/runs", headers=AUTH)
        _check_unavailable(Answer("rest", read.status_code, read.headers, read.json()))
        reports = daemon.http.post(f"{daemon.url}/api/v3/run-reports", json={"key": daemon.key})
        _check_unavailable(Answer("v3", reports.status_code, reports.headers, reports.json()))
        until(lambda: sum(a.status == 503 for a in flow.answers) >= 4, timeout=30)
        cluster.ctl("start")
        until(lambda: daemon.health().status_code == 200, timeout=30)
        time.sleep(2)
    finally:
        flow.stop()

    answers = flow.answers
    assert {a.status for a in answers} <= {200, 201, 503}, [
        a for a in answers if a.status not in (200, 201, 503)
    ]
    for answer in answers:
        if answer.status == 503:
            _check_unavailable(answer)
    accepted = [a for a in answers if _accepted(a)]
    assert len(accepted) == sum(a.status in (200, 201) for a in answers)
    refused = len(answers) - len(accepted)
    assert refused >= 4 and len(accepted) >= 20, (len(accepted), refused)

    # Every accepted trigger ended, with its true reason; none refused was recorded.
    until(lambda: daemon.total("status=pending") + daemon.total("status=running") == 0, 60)
    assert daemon.total() == len(accepted)
    assert daemon.total("end_reason=success") == len(accepted)
    ids = {run["id"] for run in daemon.runs()}
    assert {a.body["id"] for a in accepted if a.kind == "rest"} <= ids
    # The same daemon, recovered by itself.
    assert daemon.process.poll() is None
    assert daemon.health().json()["checks"] == {"database": "ok", "disk": "ok", "lease": "ok"}
    assert daemon.rest_trigger().status == 201


# ----- SQLite ---------------------------------------------------------------------------


@pytest.fixture
def sqlite_daemon(workdir: Path) -> Iterator[Daemon]:
    yield from _daemon(workdir, "sleep 1; echo hi")


def test_sqlite_locked_longer_than_busy_timeout(sqlite_daemon: Daemon) -> None:
    daemon = sqlite_daemon
    first = daemon.rest_trigger()
    assert first.status == 201, first
    run_id = first.body["id"]
    until(lambda: daemon.total("status=running") == 1)

    # Another program holds SQLite's write lock: runyard waits busy_timeout (5 s), then fails.
    lock = sqlite3.connect(daemon.data_dir / "runyard.db", timeout=0, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        answers: list[Answer] = []
        callers = [
            threading.Thread(target=lambda: answers.append(daemon.rest_trigger())),
            threading.Thread(target=lambda: answers.append(daemon.v3_trigger())),
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=60)
        assert sorted(a.kind for a in answers) == ["rest", "v3"]
        for answer in answers:
            assert answer.status == 503, answer
            _check_unavailable(answer)
        # The run's end waits for the lock; health says why runs cannot be recorded.
        until(lambda: daemon.health().status_code == 503, timeout=20)
        reason = daemon.health().json()["reason"]
        assert reason.startswith("database unavailable") and "locked" in reason, reason
    finally:
        lock.rollback()
        lock.close()

    until(lambda: daemon.health().status_code == 200, timeout=30)
    until(lambda: daemon.total("status=ended") == 1, timeout=30)
    [run] = daemon.runs()
    assert (run["id"], run["end_reason"]) == (run_id, "success")
    assert daemon.total() == 1, "a trigger answered 503 was recorded"
    after = daemon.rest_trigger()
    assert after.status == 201, after
