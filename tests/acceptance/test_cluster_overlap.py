"""A task's queue and overlap policy hold across nodes: real daemons on one PostgreSQL.

Triggers of one task spread over the nodes: its `max_queued` caps the runs
waiting on all of them together (sampled in the database every 10 ms),
on_overlap = skip refuses whatever comes while a run is running anywhere,
and on_overlap = kill stops the oldest run wherever it runs.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from runyard_harness import until
from sqlalchemy.engine import Connection
from test_cluster import Node, database  # noqa: F401 - database is a fixture
from test_cluster_limits import PeakSampler

pytestmark = pytest.mark.postgres

QUEUE_LIMIT = 3
TASKS = f"""
[tasks.capped]
run = 'sleep 4'
max_concurrent = 2
max_queued = {QUEUE_LIMIT}

[tasks.single]
run = 'sleep 4'
on_overlap = "skip"

[tasks.latest]
run = 'sleep 60'
on_overlap = "kill"
"""


_WAITING_AND_RUNNING = sa.text(
    "SELECT task_name, status, count(*) AS n FROM runs"
    " WHERE status IN ('pending', 'running') GROUP BY task_name, status"
)


def _waiting_and_running(connection: Connection) -> dict[str, int]:
    """Runs of each task waiting and running now, on every node: "pending:capped" and so on."""
    rows = connection.execute(_WAITING_AND_RUNNING)
    return {f"{row.status}:{row.task_name}": row.n for row in rows}


def _burst(nodes: list[Node], task: str, count: int) -> list[str]:
    """Trigger `task` `count` times at once, spread over the nodes; return the run ids."""
    with ThreadPoolExecutor(12) as pool:
        return list(pool.map(lambda index: nodes[index % 3].trigger(task)["id"], range(count)))


def _ends(node: Node, task: str) -> Counter[str]:
    runs = node.get(f"/api/tasks/{task}/runs", limit=500)["runs"]
    return Counter(str(run.get("end_reason") or run["status"]) for run in runs)


def test_a_tasks_queue_and_skip_hold_across_three_nodes(
    tmp_path: Path,
    database: str,  # noqa: F811 - the fixture above
) -> None:
    nodes = [Node(tmp_path, name, database, extra=TASKS) for name in ("alpha", "bravo", "charlie")]
    sampler: PeakSampler | None = None
    try:
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_until_up()
        sampler = PeakSampler(database, _waiting_and_running)
        capped = _burst(nodes, "capped", 30)
        single = _burst(nodes, "single", 30)
        assert len(set(capped)) == 30 and len(set(single)) == 30

        def settled() -> bool:
            return sum(_ends(nodes[0], "capped").values()) == 30 and not any(
                key in _ends(nodes[0], "capped") for key in ("pending", "running")
            )

        until(settled, timeout=60)
        capped_ends = _ends(nodes[1], "capped")
        single_ends = _ends(nodes[2], "single")
    finally:
        if sampler is not None:
            sampler.stop()
        for node in nodes:
            node.stop()

    assert sampler.samples > 100
    peaks = sampler.peaks
    # The burst took well under the 4 s a run lasts: 2 ran, 3 waited, the rest were
    # refused, whichever node each trigger reached.
    assert peaks["pending:capped"] == QUEUE_LIMIT, peaks
    assert peaks["running:capped"] == 2, peaks
    assert capped_ends == Counter(success=5, queue_full=25), capped_ends
    # on_overlap = skip: one run, and every trigger while it ran was skipped, on every node.
    assert peaks["running:single"] == 1, peaks
    assert peaks["pending:single"] == 0, peaks
    assert single_ends["skipped"] == 29, single_ends
    assert single_ends["success"] + single_ends["running"] == 1, single_ends


def test_a_kill_trigger_on_one_node_stops_the_run_on_another(
    tmp_path: Path,
    database: str,  # noqa: F811 - the fixture above
) -> None:
    nodes = [Node(tmp_path, name, database, extra=TASKS) for name in ("alpha", "bravo")]
    try:
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_until_up()
        first = nodes[0].trigger("latest")["id"]
        until(lambda: nodes[0].run(first)["status"] == "running", timeout=10)
        second = nodes[1].trigger("latest")["id"]
        # The run on alpha is stopped for the newer one, which then starts.
        until(lambda: nodes[1].run(first)["status"] == "ended", timeout=15)
        until(lambda: nodes[0].run(second)["status"] == "running", timeout=15)
        stopped = nodes[1].run(first)
        assert stopped["end_reason"] == "stopped", stopped
        assert stopped["node"] == "alpha"
        running = [
            run
            for run in nodes[0].get("/api/tasks/latest/runs", limit=10)["runs"]
            if run["status"] == "running"
        ]
        assert [run["id"] for run in running] == [second]
    finally:
        for node in nodes:
            node.stop()
