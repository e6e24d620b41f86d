"""A node cut off from PostgreSQL fences itself: its runs die before another node may take them.

Real daemons, the real PostgreSQL; one node reaches the database through a
TCP proxy this test cuts (tcp_proxy.py), as a network gone silent. Every
process carrying a run id is watched from /proc all along, so "no run is
ever running twice" is checked on the processes themselves, not only on
what the database says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from runyard_harness import TEST_TOKEN, until
from tcp_proxy import TcpProxy
from test_cluster import Node, database  # noqa: F401 - database is a fixture

pytestmark = pytest.mark.postgres

LEASE = 3  # seconds: the cut-off node fences itself after 2 s without a renewal

CUTOFF_TASK = """
[tasks.cutoff]
run = 'sleep 60'
max_concurrent = 8
retry_attempts = 1
retry_delay = "0s"
"""


class ProcessWatch:
    """Sample /proc every 10 ms: when the processes of each run id were first and last seen."""

    def __init__(self) -> None:
        self.first_seen: dict[str, float] = {}
        self.last_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def alive(self, run_ids: set[str]) -> set[str]:
        return run_ids & _run_ids_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for run_id in _run_ids_alive():
                self.first_seen.setdefault(run_id, now)
                self.last_seen[run_id] = now
            self._stop.wait(0.01)


def _run_ids_alive() -> set[str]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue  # dead, not yet reaped
        for variable in environ:
            if variable.startswith(b"RUNYARD_RUN_ID="):
                found.add(variable[15:].decode())
    return found


@pytest.fixture
def proxy(database: str) -> Iterator[TcpProxy]:  # noqa: F811 - the fixture above
    url = sa.make_url(database)
    made = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    yield made
    made.close()


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_a_node_cut_off_from_the_database_kills_its_runs_before_another_takes_them(
    tmp_path: Path,
    database: str,  # noqa: F811 - the fixture above
    proxy: TcpProxy,
) -> None:
    through_proxy = sa.make_url(database).set(port=proxy.port).render_as_string(hide_password=False)
    alpha = Node(tmp_path, "alpha", database, extra=CUTOFF_TASK, lease=LEASE)
    bravo = Node(tmp_path, "bravo", through_proxy, extra=CUTOFF_TASK, lease=LEASE)
    watch = ProcessWatch()
    try:
        alpha.start()
        bravo.start()
        originals = {bravo.trigger("cutoff")["id"] for _ in range(4)}
        until(lambda: all(alpha.run(run)["status"] == "running" for run in originals))
        until(lambda: watch.alive(originals) == originals)

        cut_at = time.time()
        proxy.cut()
        # Fenced: its runs die within the lease, before anybody can take them over.
        until(lambda: not watch.alive(originals), timeout=LEASE + 5)
        assert time.time() - cut_at < LEASE + 1
        refused = httpx.post(
            f"{bravo.url}/api/tasks/cutoff/run",
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
            timeout=10,
        )
        assert refused.status_code == 503, refused.text
        assert "node 'bravo' cannot renew its lease" in refused.text
        health = httpx.get(f"{bravo.url}/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["checks"]["lease"].startswith("fenced, starting no runs: ")

        # alpha takes bravo over once its lease expired: ends its runs, retries them.
        until(
            lambda: all(alpha.run(run)["status"] == "ended" for run in originals),
            timeout=LEASE + 15,
        )
        retries = {}

        def retried() -> bool:
            listed = alpha.get("/api/tasks/cutoff/runs", limit=100)["runs"]
            retries.update(
                {run["retry_of_run_id"]: run for run in listed if run.get("retry_of_run_id")}
            )
            return set(retries) == originals

        until(retried)
        until(
            lambda: (
                watch.alive({run["id"] for run in retries.values()})
                == {run["id"] for run in retries.values()}
            )
        )
        proxy.restore()
        until(lambda: "fence lifted" in bravo.log(), timeout=30)

        # bravo is back and takes runs again, as a node of the cluster.
        assert httpx.get(f"{bravo.url}/health", timeout=10).json()["checks"]["lease"] == "ok"
        again = bravo.trigger("cutoff")["id"]
        until(lambda: alpha.run(again)["status"] == "running")
        assert alpha.run(again)["node"] == "bravo"
        assert [node["name"] for node in alpha.get("/api/cluster")["nodes"]] == [
            "alpha",
            "bravo",
        ]
        watch.stop()
        for original in originals:
            run = alpha.run(original)
            # Recorded once, by the node that took bravo over, and not overwritten
            # by anything bravo still had to write when it came back.
            assert run["end_reason"] == "crashed", run
            assert run["node"] == "bravo"
            assert "Node 'bravo' stopped renewing its lease" in run["description"]
            assert "node 'alpha' ended the run." in run["description"]
            assert run["description"].count("Crashed") == 1
            retry = retries[original]
            assert retry["node"] == "alpha"
            # No moment had the run's process and its retry's alive together, and
            # the run was recorded ended only once its process was gone.
            assert watch.last_seen[original] < watch.first_seen[retry["id"]]
            assert watch.last_seen[original] < _stamp(run["end_at"])
        # Nothing lost, nothing doubled: 4 runs, 4 retries, 1 run after the cut.
        every = alpha.get("/api/tasks/cutoff/runs", limit=100)["runs"]
        assert len(every) == 9
        assert sorted(run.get("retry_of_run_id") or "" for run in every).count("") == 5
        fenced = [line for line in bravo.log().splitlines() if "node bravo fenced" in line]
        assert len(fenced) >= 1
        assert "killed 4 run(s)" in fenced[0]
    finally:
        watch.stop()
        proxy.restore()  # a failed test may leave it cut: bravo must be able to stop
        try:
            bravo.stop()
        finally:
            alpha.stop()
