"""Runs a dead daemon had started, and the processes they left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runyard.engine.strays import StartLog, kill_strays


def _spawn(run_id: str, script: str = "sleep 60") -> subprocess.Popen[bytes]:
    env = {**os.environ, "RUNYARD_RUN_ID": run_id}
    return subprocess.Popen(["sh", "-c", script], start_new_session=True, env=env)


def test_started_runs_survive_into_the_next_daemon(tmp_path: Path) -> None:
    log = StartLog(tmp_path / "started.log", lambda: [])
    log.open()
    log.record("run-1")
    log.record("run-2")
    log.close()
    assert StartLog(tmp_path / "started.log", lambda: []).leftovers() == {"run-1", "run-2"}
    fresh = StartLog(tmp_path / "started.log", lambda: [])
    fresh.open()  # the next daemon starts a new list
    fresh.close()
    assert fresh.leftovers() == set()


def test_compaction_keeps_only_live_runs(tmp_path: Path) -> None:
    log = StartLog(tmp_path / "started.log", lambda: ["live"])
    log.open()
    for index in range(60_000):  # past the compaction threshold
        log.record(f"run-{index:05d}-xxxxxxxxxx")
    log.close()
    leftovers = StartLog(tmp_path / "started.log", lambda: []).leftovers()
    assert "live" in leftovers
    assert len(leftovers) < 60_000


def test_kill_strays_kills_the_groups_of_that_run_only() -> None:
    mine = _spawn("run-1", "sleep 60 & sleep 60")  # a leader and a child in one group
    other = _spawn("run-2")
    try:
        killed = kill_strays({"run-1"})
        assert killed == {"run-1": [mine.pid]}
        assert mine.wait(timeout=5) == -9
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_kill_strays_with_nothing_to_do() -> None:
    assert kill_strays(set()) == {}
    assert kill_strays({"no-such-run"}) == {}
