"""Several runyard daemons on one real PostgreSQL, each a separate process (README "Several nodes").

Each test gets a database of its own on the PostgreSQL at 127.0.0.1:5432
(RUNYARD_TEST_POSTGRES_URL overrides it); the tests fail, never skip, when
that server does not answer. Leases are 2 s here (`node_lease`), so a dead
node is taken over within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from runyard_harness import (
    TEST_TOKEN,
    cli_env,
    free_port,
    run_cli,
    stop_daemon,
    stop_process,
    until,
    wait_for_health,
)

pytestmark = pytest.mark.postgres

POSTGRES_URL = os.environ.get(
    "RUNYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
LEASE_SECONDS = 2

NODE_CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
node_name = "{name}"
node_lease = "{lease}s"
max_concurrent_runs = 8
shutdown_timeout = "5s"

[tasks.sleepy]
run = 'echo started; sleep 60'
max_concurrent = 8
retry_attempts = 1
retry_delay = "1h"
{extra}
"""

TICK_SECONDS = 60  # issue 16: a per-second task for 60 s
TICK_TASK = """
[tasks.tick]
run = 'true'
cron = "* * * * * *"
"""


def _driver_url(url: str) -> sa.URL:
    return sa.make_url(url).set(drivername="postgresql+psycopg")


@pytest.fixture
def database() -> Iterator[str]:
    """Create a database for this test alone; drop it (closing what is left on it) after."""
    server = _driver_url(POSTGRES_URL)
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = f"runyard_cluster_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


class Node:
    """One `runyard serve` of the cluster, with its own port, data dir and log."""

    def __init__(
        self,
        root: Path,
        name: str,
        database: str,
        extra: str = "",
        lease: int = LEASE_SECONDS,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.dir = root / name
        self.dir.mkdir()
        self.config = self.dir / "runyard.toml"
        self.config.write_text(
            NODE_CONFIG.format(
                port=self.port,
                data_dir=self.dir / "data",
                name=name,
                lease=lease,
                extra=extra,
            ),
            encoding="utf-8",
        )
        self.env = cli_env(RUNYARD_TOKEN=TEST_TOKEN, RUNYARD_DATABASE_URL=database)
        self.starts = 0
        self.output = self.dir / "daemon-0.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.launch()
        self.wait_until_up()

    def launch(self) -> None:
        """Start the process; wait_until_up() waits for it (nodes start side by side)."""
        # Each start logs to a file of its own: the test reads them all (log()).
        self.starts += 1
        self.output = self.dir / f"daemon-{self.starts}.log"
        with self.output.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runyard", "--config", str(self.config), "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_until_up(self) -> None:
        assert self.process is not None
        problem = wait_for_health(self.url, self.process)
        if problem is not None:
            stop_process(self.process)
            raise AssertionError(f"{problem}; its output:\n{self.log()}")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_daemon(self.process, self.output)
            self.process = None

    def log(self) -> str:
        """Return what the node logged, over all its starts."""
        return "".join(
            (self.dir / f"daemon-{start}.log").read_text(errors="replace")
            for start in range(1, self.starts + 1)
        )

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            f"{self.url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def trigger(self, task: str) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/api/tasks/{task}/run",
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def run(self, run_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.get(f"/api/runs/{run_id}")
        return body

    def create_key(self, account: str) -> str:
        """Create a v3 key of `account` with the CLI on this node's database; return the key."""
        created = run_cli(
            "--config", str(self.config), "keys", "create", "--account", account, env=self.env
        )
        assert created.returncode == 0, created.stderr
        return created.stdout.strip()


@pytest.fixture
def nodes(tmp_path: Path, database: str) -> Iterator[list[Node]]:
    """Three nodes (not started) on the test's database; whatever runs is stopped after."""
    made = [Node(tmp_path, name, database) for name in ("alpha", "bravo", "charlie")]
    try:
        yield made
    finally:
        for node in made:
            if node.process is not None:
                node.process.send_signal(signal.SIGTERM)
        for node in made:
            if node.process is not None:
                try:
                    node.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()


def _processes_of(run_ids: set[str]) -> list[int]:
    """Return the pids of the processes on this machine that carry one of these run ids."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for variable in environ:
            if variable.startswith(b"RUNYARD_RUN_ID=") and variable[15:].decode() in run_ids:
                found.append(int(entry.name))
    return found


def test_nodes_register_and_every_node_lists_them(nodes: list[Node]) -> None:
    for node in nodes:
        node.start()
    for node in nodes:
        body = node.get("/api/cluster")
        assert body["node"] == node.name
        listed = {entry["name"]: entry for entry in body["nodes"]}
        assert sorted(listed) == ["alpha", "bravo", "charlie"]
        for entry in listed.values():
            assert 0 <= entry["lease_age_seconds"] < LEASE_SECONDS
            assert entry["lease_seconds"] == LEASE_SECONDS
            assert entry["expired"] is False
            assert entry["running_runs"] == 0
        assert listed["bravo"]["url"] == nodes[1].url
        assert len({entry["config_hash"] for entry in listed.values()}) == 1
        assert body["config_mismatch"] is False

    # A run records the node that admitted and started it; any node shows it.
    run = nodes[1].trigger("sleepy")
    assert run["node"] == "bravo"
    until(lambda: nodes[2].run(run["id"])["status"] == "running")
    assert nodes[0].run(run["id"])["node"] == "bravo"
    counts = {e["name"]: e["running_runs"] for e in nodes[0].get("/api/cluster")["nodes"]}
    assert counts == {"alpha": 0, "bravo": 1, "charlie": 0}
    # Any node stops it: alpha asks bravo (more in test_cluster_any_node.py).
    stopped = httpx.post(
        f"{nodes[0].url}/api/runs/{run['id']}/stop",
        headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        timeout=10,
    )
    assert stopped.status_code == 202, stopped.text
    assert stopped.json()["node"] == "bravo"

    # The CLI prints the same, as a table or as JSON.
    shown = run_cli("--config", str(nodes[0].config), "cluster", env=nodes[0].env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["NODE", "URL", "LEASE", "RUNNING", "CONFIG"]
    assert [line.split()[0] for line in lines[1:4]] == ["alpha", "bravo", "charlie"]
    assert "alpha *" in lines[1]
    as_json = run_cli("--config", str(nodes[0].config), "cluster", "--json", env=nodes[0].env)
    assert as_json.returncode == 0, as_json.stderr
    assert [entry["name"] for entry in json.loads(as_json.stdout)["nodes"]] == [
        "alpha",
        "bravo",
        "charlie",
    ]


def test_a_node_with_another_config_shows_as_a_mismatch(tmp_path: Path, database: str) -> None:
    same = Node(tmp_path, "same", database)
    other = Node(tmp_path, "other", database, extra=TICK_TASK.replace("* * * * * *", "@daily"))
    same.start()
    other.start()
    try:
        body = same.get("/api/cluster")
        assert body["config_mismatch"] is True
        hashes = {entry["name"]: entry["config_hash"] for entry in body["nodes"]}
        assert hashes["same"] != hashes["other"]
        shown = run_cli("--config", str(same.config), "cluster", env=same.env)
        assert "do not all run the same config" in shown.stdout
    finally:
        same.stop()
        other.stop()


def test_a_second_live_node_cannot_take_a_name_in_use(tmp_path: Path, database: str) -> None:
    first = Node(tmp_path, "one", database)
    first.start()
    try:
        twin = Node(tmp_path, "twin", database)
        twin.config.write_text(
            twin.config.read_text().replace('node_name = "twin"', 'node_name = "one"')
        )
        result = run_cli("--config", str(twin.config), "serve", env=twin.env)
        assert result.returncode != 0
        assert "node name 'one' is held by a live node at " + first.url in result.stderr
    finally:
        first.stop()


def test_three_nodes_fire_each_cron_tick_exactly_once(nodes: list[Node], database: str) -> None:
    """Issue 16: 3 nodes, a per-second task for 60 s: exactly one run per tick."""
    for node in nodes:
        node.config.write_text(node.config.read_text() + TICK_TASK, encoding="utf-8")
    engine = sa.create_engine(_driver_url(database))
    try:
        # One start makes the schema; then every tick after `first` is to
        # fire, and the three nodes (started side by side) are up before it.
        nodes[0].start()
        nodes[0].stop()
        first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=12)
        with engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM runs"))
            connection.execute(
                sa.text(
                    "UPDATE task_state SET last_tick = :first WHERE task_name = 'tick'"
                ).bindparams(first=first)
            )
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_until_up()
        until(lambda: _last_tick(engine) >= first + timedelta(seconds=TICK_SECONDS), 100)
        for node in nodes:
            node.stop()
        last = _last_tick(engine)
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT node, end_reason, triggered_by, created_at FROM runs "
                    "WHERE task_name = 'tick' ORDER BY created_at"
                )
            ).all()
    finally:
        engine.dispose()
    ticks = [
        first + timedelta(seconds=n) for n in range(1, int((last - first).total_seconds()) + 1)
    ]
    assert len(ticks) >= TICK_SECONDS
    # Every run is a cron run that succeeded: no `missed` run stands in for a
    # tick, none failed.
    assert [(reason, by) for _, reason, by, _ in rows if (reason, by) != ("success", "cron")] == []
    assert len(rows) == len(ticks)  # one run per tick: none lost, none doubled
    # And tick by tick (runs carry no tick, but a tick fires at or after its
    # second and within the 5 s a tick counts as on time): the n-th run was
    # created no earlier than the n-th tick, so no tick had two runs before
    # the next came due, and no later than 5 s after it, so none was skipped.
    for tick, (_, _, _, created_at) in zip(ticks, rows, strict=True):
        assert tick <= created_at < tick + timedelta(seconds=5), (tick, created_at)
    assert {node for node, _, _, _ in rows} <= {"alpha", "bravo", "charlie"}


def _last_tick(engine: sa.Engine) -> datetime:
    with engine.connect() as connection:
        last: datetime = connection.execute(
            sa.text("SELECT last_tick FROM task_state WHERE task_name = 'tick'")
        ).scalar_one()
        return last


def test_a_killed_nodes_runs_are_ended_once_by_one_survivor(nodes: list[Node]) -> None:
    alpha, bravo, charlie = nodes
    for node in nodes:
        node.start()
    kept = [alpha.trigger("sleepy")["id"], bravo.trigger("sleepy")["id"]]
    doomed = [charlie.trigger("sleepy")["id"] for _ in range(4)]
    until(lambda: all(alpha.run(run)["status"] == "running" for run in kept + doomed))
    charlie.kill9()

    def all_crashed() -> bool:
        return all(alpha.run(run_id)["status"] == "ended" for run_id in doomed)

    until(all_crashed, timeout=LEASE_SECONDS + 15)
    takers = [node for node in (alpha, bravo) if "took over dead node charlie" in node.log()]
    assert len(takers) == 1
    taker = takers[0]
    assert taker.log().count("took over dead node charlie") == 1
    for run_id in doomed:
        run = bravo.run(run_id)
        assert run["end_reason"] == "crashed"
        assert run["exit_code"] == -2
        assert run["node"] == "charlie"
        assert "Node 'charlie' stopped renewing its lease (last renewed " in run["description"]
        assert f"node '{taker.name}' ended the run." in run["description"]
    # The retry policy applies once per crashed run, on the node that took them.
    retries = [
        run
        for run in alpha.get("/api/tasks/sleepy/runs", limit=100)["runs"]
        if run.get("retry_of_run_id") in doomed
    ]
    assert sorted(run["retry_of_run_id"] for run in retries) == sorted(doomed)
    assert {run["node"] for run in retries} == {taker.name}
    assert {run["status"] for run in retries} == {"pending"}  # retry_delay = 1h
    # The live nodes' runs were never touched.
    assert [alpha.run(run)["status"] for run in kept] == ["running", "running"]
    listed = [entry["name"] for entry in alpha.get("/api/cluster")["nodes"]]
    assert listed == ["alpha", "bravo"]

    # The killed node's processes outlived it; restarted, it kills them (their
    # runs are ended) and leaves the other nodes' runs running.
    assert _processes_of(set(doomed))
    charlie.start()
    assert _processes_of(set(doomed)) == []
    assert [charlie.run(run)["status"] for run in kept] == ["running", "running"]
    for run_id in doomed:
        assert charlie.run(run_id)["description"].count("Crashed") == 1
    listed = [entry["name"] for entry in charlie.get("/api/cluster")["nodes"]]
    assert listed == ["alpha", "bravo", "charlie"]
    for node in nodes:
        node.stop()


IN_FLIGHT = 50  # issue 16: kill -9 of one node with 50 runs in flight
QUEUED = 10  # and these waiting on it for a free slot
FLIGHT_TASK = """
[tasks.flight]
run = 'if [ -e "{release}" ]; then echo ran; else echo started; sleep 120; fi'
max_concurrent = 100
max_queued = 100
retry_attempts = 1
retry_delay = "1s"
"""


def test_a_killed_node_with_50_runs_in_flight_loses_and_doubles_nothing(
    nodes: list[Node], tmp_path: Path
) -> None:
    """Issue 16: kill -9 of one node with 50 runs in flight.

    All 50 end `crashed` within lease + 15 s and are retried once on the
    survivors; its queued runs run on the survivors; nothing is lost or
    doubled. A run started before the release file exists holds its slot
    (sleep 120); one started after it (a retry, a queued run) ends at once.
    """
    alpha, bravo, charlie = nodes
    release = tmp_path / "release"
    for node in nodes:
        text = node.config.read_text() + FLIGHT_TASK.format(release=release)
        if node is charlie:
            text = text.replace("max_concurrent_runs = 8", f"max_concurrent_runs = {IN_FLIGHT}")
        node.config.write_text(text, encoding="utf-8")
    for node in nodes:
        node.launch()
    for node in nodes:
        node.wait_until_up()
    kept = [alpha.trigger("sleepy")["id"], bravo.trigger("sleepy")["id"]]
    doomed = [charlie.trigger("flight")["id"] for _ in range(IN_FLIGHT)]
    queued = [charlie.trigger("flight")["id"] for _ in range(QUEUED)]

    def flights() -> dict[str, dict[str, Any]]:
        listed = alpha.get("/api/tasks/flight/runs", limit=1000)["runs"]
        return {run["id"]: run for run in listed}

    def in_flight() -> bool:
        runs = flights()
        return sum(runs[run]["status"] == "running" for run in doomed) == IN_FLIGHT

    until(in_flight, timeout=60)
    before = flights()
    assert sorted(before) == sorted(doomed + queued)
    assert {before[run]["node"] for run in before} == {"charlie"}
    # charlie's slots are full: the last ten wait there.
    assert {before[run]["status"] for run in queued} == {"pending"}
    until(lambda: all(alpha.run(run)["status"] == "running" for run in kept))

    charlie.kill9()
    killed = time.monotonic()
    killed_at = datetime.now(UTC)
    release.touch()
    try:

        def all_crashed() -> bool:
            runs = flights()
            return all(runs[run]["status"] == "ended" for run in doomed)

        until(all_crashed, timeout=LEASE_SECONDS + 30)
        took = time.monotonic() - killed
        assert took <= LEASE_SECONDS + 15, f"crashed {took:.1f} s after the kill"

        survivors = {"alpha", "bravo"}

        def settled() -> bool:
            runs = flights()
            # Retries are inserted with the crash, in one transaction.
            return all(run["status"] == "ended" for run in runs.values())

        until(settled, timeout=60)
        after = flights()
    finally:
        # The killed node's processes outlived it: end them (sh and its sleep).
        for pid in _processes_of(set(doomed)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    for run_id in doomed:
        run = after[run_id]
        assert run["end_reason"] == "crashed", run
        assert run["node"] == "charlie"
        assert "Node 'charlie' stopped renewing its lease" in run["description"]
        ended_at = datetime.fromisoformat(run["end_at"].replace("Z", "+00:00"))
        assert ended_at - killed_at <= timedelta(seconds=LEASE_SECONDS + 15)
    # Each crashed run retried exactly once (retry_attempts = 1), on a survivor,
    # where the retry ran and succeeded.
    retries = [run for run in after.values() if run.get("retry_of_run_id") is not None]
    assert Counter(run["retry_of_run_id"] for run in retries) == Counter(doomed)
    for run in retries:
        assert run["retry_attempt"] == 1
        assert run["node"] in survivors, run
        assert (run["status"], run["end_reason"]) == ("ended", "success"), run
    # Its queued runs ran elsewhere, once each, after the kill (never on charlie).
    for run_id in queued:
        run = after[run_id]
        assert run["node"] in survivors, run
        assert (run["status"], run["end_reason"]) == ("ended", "success"), run
        started = datetime.fromisoformat(run["start_at"].replace("Z", "+00:00"))
        assert started > killed_at
    # Nothing lost, nothing doubled: exactly these runs, no other.
    assert len(after) == 2 * IN_FLIGHT + QUEUED
    assert set(after) == set(doomed) | set(queued) | {run["id"] for run in retries}
    # The survivors' own runs were never touched.
    assert [alpha.run(run)["status"] for run in kept] == ["running", "running"]
    takers = [node for node in (alpha, bravo) if "took over dead node charlie" in node.log()]
    assert len(takers) == 1


def test_a_restarted_node_recovers_only_its_own_runs(tmp_path: Path, database: str) -> None:
    # alpha's lease outlasts its restart: nobody takes it over meanwhile.
    alpha = Node(tmp_path, "alpha", database, lease=120)
    bravo = Node(tmp_path, "bravo", database)
    alpha.start()
    bravo.start()
    theirs = bravo.trigger("sleepy")["id"]
    mine = alpha.trigger("sleepy")["id"]
    until(lambda: alpha.run(theirs)["status"] == "running")
    until(lambda: alpha.run(mine)["status"] == "running")
    # Killed and back within its lease: no survivor takes alpha over; alpha's
    # own start-up recovery ends its run, and only its run.
    alpha.kill9()
    alpha.start()
    ended = alpha.run(mine)
    assert ended["status"] == "ended"
    assert ended["end_reason"] == "crashed"
    assert "stopped renewing its lease" not in ended["description"]
    assert alpha.run(theirs)["status"] == "running"
    assert "took over" not in bravo.log()
    retries = [
        run
        for run in alpha.get("/api/tasks/sleepy/runs", limit=100)["runs"]
        if run.get("retry_of_run_id") == mine
    ]
    assert [run["node"] for run in retries] == ["alpha"]
    alpha.stop()
    bravo.stop()
