"""Limits hold across nodes: 3 real daemons on one PostgreSQL, 300 triggers spread over them.

A task's `max_concurrent`, a v3 account's `max_concurrent_runs` and each
node's `max_concurrent_runs` are sampled all along, twice: in the database
(rows `running`) and on the machine (live processes carrying a run id and
task name), so a limit passed for even a few milliseconds is caught.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from runyard_harness import until
from sqlalchemy.engine import Connection
from test_cluster import Node, database  # noqa: F401 - database is a fixture

pytestmark = pytest.mark.postgres

TASK_LIMIT = 4
ACCOUNT_LIMIT = 2
NODE_LIMIT = 8  # NODE_CONFIG's max_concurrent_runs

LIMITED = """
[tasks.limited]
run = 'echo "$RUNYARD_RUN_ID" >> {starts}; sleep 0.2'
max_concurrent = {task_limit}
max_queued = 1000

[tasks.acct-work]
run = 'echo "$RUNYARD_RUN_ID" >> {starts}; sleep 0.3'
max_concurrent = 100
max_queued = 1000

[accounts.acme]
tasks = ["acct-*"]
max_concurrent_runs = {account_limit}
"""


class PeakSampler:
    """Call `sample` with a database connection every 10 ms; keep the peak of each count."""

    def __init__(
        self, database_url: str, sample: Callable[[Connection], Mapping[str, int]]
    ) -> None:
        self._engine = sa.create_engine(
            sa.make_url(database_url).set(drivername="postgresql+psycopg")
        )
        self._sample = sample
        self.peaks: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._engine.dispose()

    def _sample_forever(self) -> None:
        while not self._stop.is_set():
            with self._engine.connect() as connection:
                counts = self._sample(connection)
            for key, value in counts.items():
                self.peaks[key] = max(self.peaks[key], value)
            self.samples += 1
            self._stop.wait(0.01)


_RUNNING = sa.text("SELECT task_name, account, node FROM runs WHERE status = 'running'")


def _limits(connection: Connection) -> dict[str, int]:
    """The runs running now per limited task, account and node: in the database and in /proc."""
    rows = connection.execute(_RUNNING).all()
    counts = {
        "db:limited": sum(row.task_name == "limited" for row in rows),
        "db:acme": sum(row.account == "acme" for row in rows),
    }
    for node, count in Counter(row.node for row in rows).items():
        counts[f"db:node:{node}"] = count
    alive = Counter(runs_alive().values())
    counts["proc:limited"] = alive["limited"]
    counts["proc:acct-work"] = alive["acct-work"]
    return counts


def runs_alive() -> dict[str, str]:
    """The run id and task of every live run process (one per run: the shell it started)."""
    found: dict[str, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = dict(
                item.split(b"=", 1)
                for item in (entry / "environ").read_bytes().split(b"\0")
                if b"=" in item
            )
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        run_id, task = environ.get(b"RUNYARD_RUN_ID"), environ.get(b"RUNYARD_TASK")
        if run_id and task and state != "Z":
            found[run_id.decode()] = task.decode()
    return found


def test_three_nodes_and_300_triggers_keep_every_limit_and_start_each_run_once(
    tmp_path: Path,
    database: str,  # noqa: F811 - the fixture above
) -> None:
    starts = tmp_path / "starts.txt"
    extra = LIMITED.format(starts=starts, task_limit=TASK_LIMIT, account_limit=ACCOUNT_LIMIT)
    nodes = [Node(tmp_path, name, database, extra=extra) for name in ("alpha", "bravo", "charlie")]
    sampler: PeakSampler | None = None
    try:
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_until_up()
        key = nodes[0].create_key("acme")
        sampler = PeakSampler(database, _limits)

        def rest(index: int) -> str:
            return str(nodes[index % 3].trigger("limited")["id"])

        def v3(index: int) -> dict[str, Any]:
            answer = httpx.post(
                f"{nodes[index % 3].url}/api/v3/trigger",
                json={"key": key, "name": "acct-work"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body

        with ThreadPoolExecutor(12) as pool:
            rest_ids = list(pool.map(rest, range(240)))
            v3_answers = list(pool.map(v3, range(60)))
        assert len(set(rest_ids)) == 240
        assert all(answer for answer in v3_answers)

        def all_ended() -> bool:
            body = nodes[1].get("/api/runs", limit=1, status="ended")
            return int(body["total"]) == 300

        until(all_ended, timeout=120)
        ended = [
            run
            for page_task in ("limited", "acct-work")
            for run in nodes[2].get(f"/api/tasks/{page_task}/runs", limit=500)["runs"]
        ]
    finally:
        if sampler is not None:
            sampler.stop()
        for node in nodes:
            node.stop()

    assert sampler.samples > 100
    peaks = sampler.peaks
    # Every limit held at every sample, in the database and among the processes.
    assert 0 < peaks["db:limited"] <= TASK_LIMIT, peaks
    assert 0 < peaks["proc:limited"] <= TASK_LIMIT, peaks
    assert 0 < peaks["db:acme"] <= ACCOUNT_LIMIT, peaks
    assert 0 < peaks["proc:acct-work"] <= ACCOUNT_LIMIT, peaks
    for node in nodes:
        assert peaks[f"db:node:{node.name}"] <= NODE_LIMIT, peaks
    # 300 runs, each started once, each ended well; more than one node ran them.
    assert len(ended) == 300
    assert {run["end_reason"] for run in ended} == {"success"}
    started = starts.read_text().split()
    assert len(started) == 300 and len(set(started)) == 300
    assert set(started) == {run["id"] for run in ended}
    assert len({run["node"] for run in ended if run["task_name"] == "limited"}) == 3
