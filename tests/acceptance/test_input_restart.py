"""A daemon restarted with runs pending gives each its own large input (issue 9, item 4).

The triggers go through the v3 API with bodies large enough to be parsed by a
worker process and kept in input files; the daemon is stopped while they
wait and a new one, on the same data dir, runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

from v3_fixtures import poll, v3_daemon

ROWS = 8000  # ~200 KB of JSON per trigger: over the 64 KiB where bodies go to a worker


def test_pending_runs_get_their_large_input_after_a_restart(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    body = f"""
[accounts.acme]
rate_limit_per_minute = 100000

[tasks.ingest]
automation = "Ingest"
run = '''
while [ ! -e "{dest}/go" ]; do sleep 0.05; done
cp "$RUNYARD_INPUT" "{dest}/$RUNYARD_RUN_ID.json"
'''
max_concurrent = 1
graceful_stop = "1s"
"""
    tables = {tag: [[f"{tag}{row}", "é,x"] for row in range(ROWS)] for tag in "abc"}
    with v3_daemon(tmp_path / "daemon", body, {"first": "acme"}) as daemon:
        key = daemon.keys["first"]
        daemon.trigger(key, "Ingest")  # holds the task's only slot until `go` exists
        for data in tables.values():
            status, answer = daemon.call("trigger", {"key": key, "name": "Ingest", "data": data})
            assert (status, answer["status"]) == (200, "queued"), answer
        listed = daemon.rest("GET", "/api/runs?status=pending").json()
        assert listed["total"] == 3
        assert all("input_data" not in run for run in listed["runs"])
        pending = [run["id"] for run in listed["runs"]]
    # Stopped with three runs pending; a new daemon on the same data dir runs them.
    with v3_daemon(tmp_path / "daemon", body, {"second": "acme"}) as daemon:
        (dest / "go").touch()
        poll(lambda: len(list(dest.glob("*.json"))) == 3, timeout=60)
        got = {}
        for run_id in pending:
            daemon.wait_ended(run_id)
            given = json.loads((dest / f"{run_id}.json").read_text(encoding="utf-8"))
            assert daemon.run(run_id)["input_data"] == given
            got[run_id] = given
    assert sorted(tables.values()) == sorted(table for [table] in got.values())
