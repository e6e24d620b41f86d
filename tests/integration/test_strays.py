"""Processes runs left behind: found by their run id in /proc, and killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Collection
from pathlib import Path

import pytest

from runyard.engine.strays import ProcessTable, StrayKiller, kill_strays

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# Other test sessions on this machine kill by run id too: ids of this session only.
_SESSION = uuid.uuid4().hex


def run_id(name: str) -> str:
    return f"test-{_SESSION}-{name}"


def _end(process: subprocess.Popen[bytes]) -> None:
    """Kill the process's whole group (a shell may have forked its command) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _spawn(run: str, script: str = "sleep 60") -> subprocess.Popen[bytes]:
    env = {**os.environ, "RUNYARD_RUN_ID": run}
    return subprocess.Popen(["sh", "-c", script], start_new_session=True, env=env)


def test_kill_strays_kills_the_groups_of_that_run_only() -> None:
    mine = _spawn(run_id("1"), "sleep 60 & sleep 60")  # a leader and a child in one group
    other = _spawn(run_id("2"))
    try:
        killed = kill_strays({run_id("1")})
        assert killed == {run_id("1"): [mine.pid]}
        assert mine.wait(timeout=5) == -9
        assert other.poll() is None
    finally:
        _end(other)


def test_kill_strays_with_nothing_to_do() -> None:
    assert kill_strays(set()) == {}
    assert kill_strays({"no-such-run"}) == {}


# A daemon (here, a helper process in a session of its own) with a child in its
# own process group carrying the run's id: the daemon's group is never killed.
OWN_GROUP = """
import json, os, subprocess, sys
from runyard.engine.strays import kill_strays
child = subprocess.Popen(["sleep", "60"], env={**os.environ, "RUNYARD_RUN_ID": sys.argv[1]})
print(json.dumps([child.pid, kill_strays({sys.argv[1]})]), flush=True)
child.kill()
child.wait()
"""


def test_kill_strays_never_kills_the_callers_own_group() -> None:
    helper = subprocess.run(
        [sys.executable, "-c", OWN_GROUP, run_id("own")],
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert helper.returncode == 0, helper.stderr
    child, killed = json.loads(helper.stdout)
    assert isinstance(child, int)
    assert killed == {}


def test_a_detached_grandchild_is_found_through_its_inherited_environment() -> None:
    env = {**os.environ, "RUNYARD_RUN_ID": run_id("3")}
    leader = subprocess.Popen(
        ["sh", "-c", "setsid sleep 60 > /dev/null & echo $!; exec sleep 60"],
        start_new_session=True,
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        assert leader.stdout is not None
        detached = int(leader.stdout.readline())
        until_in_own_session(detached)
        killed = kill_strays({run_id("3")})
        assert sorted(killed[run_id("3")]) == sorted([leader.pid, detached])
        assert leader.wait(timeout=5) == -9
    finally:
        _end(leader)
        assert leader.stdout is not None
        leader.stdout.close()


def until_in_own_session(pid: int) -> None:
    """Wait until `pid` leads its own process group (setsid ran)."""
    deadline = time.monotonic() + 10
    while os.getpgid(pid) != pid:
        assert time.monotonic() < deadline, "setsid did not run"
        time.sleep(0.01)


# ----- the process table: a fake /proc (real pids, written environments) -------------


def _fake_process(proc: Path, pid: int, run_id: str | None) -> Path:
    """Write /proc/<pid>/environ (and stat) for `pid` as a process of `run_id` would have them."""
    entry = proc / f"{pid}.new"
    entry.mkdir()
    environ = b"PATH=/bin\0" + (f"RUNYARD_RUN_ID={run_id}\0".encode() if run_id else b"")
    (entry / "environ").write_bytes(environ)
    (entry / "stat").write_bytes(f"{pid} (sleep) S 1".encode())
    if (proc / str(pid)).exists():
        shutil.rmtree(proc / str(pid))
    # Renamed into place: the entry gets a new inode, as a new process would.
    entry.rename(proc / str(pid))
    return proc / str(pid)


class CountingTable(ProcessTable):
    def __init__(self, proc: Path) -> None:
        super().__init__(proc)
        self.read: list[int] = []

    def _owner(self, pid: str) -> str | None:
        self.read.append(int(pid))
        return super()._owner(pid)


def test_a_process_seen_once_is_not_read_again(tmp_path: Path) -> None:
    sleepers = [_spawn("unrelated") for _ in range(3)]
    try:
        for sleeper in sleepers:
            _fake_process(tmp_path, sleeper.pid, None)
        table = CountingTable(tmp_path)
        assert table.kill_runs({run_id("1")}) == {}
        assert sorted(table.read) == sorted(sleeper.pid for sleeper in sleepers)
        table.read.clear()
        assert table.kill_runs({run_id("2")}) == {}
        assert table.read == []
        assert all(sleeper.poll() is None for sleeper in sleepers)
    finally:
        for sleeper in sleepers:
            _end(sleeper)


def test_a_reused_pid_is_read_again(tmp_path: Path) -> None:
    sleeper = _spawn(run_id("1"))
    try:
        _fake_process(tmp_path, sleeper.pid, "another-run")
        table = CountingTable(tmp_path)
        assert table.kill_runs({run_id("1")}) == {}
        # The pid now belongs to a new process (a new /proc entry) of run-1.
        _fake_process(tmp_path, sleeper.pid, run_id("1"))
        assert table.kill_runs({run_id("1")}) == {run_id("1"): [sleeper.pid]}
        assert sleeper.wait(timeout=5) == -9
    finally:
        _end(sleeper)


def test_a_process_remembered_as_the_runs_is_read_again_before_it_is_killed(
    tmp_path: Path,
) -> None:
    sleeper = _spawn(run_id("1"))
    try:
        entry = _fake_process(tmp_path, sleeper.pid, run_id("1"))
        table = CountingTable(tmp_path)
        assert table.kill_runs({"other"}) == {}  # remembered as run-1's
        # It exec'd with a clean environment since: same process, same entry.
        (entry / "environ").write_bytes(b"PATH=/bin\0")
        assert table.kill_runs({run_id("1")}) == {}
        assert sleeper.poll() is None
    finally:
        _end(sleeper)


# ----- StrayKiller: runs ending together share one scan ---------------------------------


class SlowTable(ProcessTable):
    """Counts the scans, each slow enough for other runs to end meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.scans: list[set[str]] = []

    def kill_runs(self, run_ids: Collection[str]) -> dict[str, list[int]]:
        self.scans.append(set(run_ids))
        time.sleep(0.02)
        return super().kill_runs(run_ids)


async def test_runs_ending_together_share_one_scan() -> None:
    table = SlowTable()
    killer = StrayKiller(table)
    mine = _spawn(run_id("0"))
    try:
        first = asyncio.ensure_future(killer.kill_leftovers(run_id("0")))
        await asyncio.sleep(0.01)  # its scan has begun
        others = [killer.kill_leftovers(run_id(str(index))) for index in range(1, 30)]
        results = await asyncio.gather(first, *others)
    finally:
        _end(mine)
    assert results == [[mine.pid]] + [[]] * 29
    assert table.scans == [{run_id("0")}, {run_id(str(index)) for index in range(1, 30)}]


async def test_a_failed_scan_fails_its_runs_only_and_the_next_scan_runs() -> None:
    class BrokenProc(ProcessTable):
        def __init__(self) -> None:
            super().__init__(Path("/nonexistent-proc"))

    killer = StrayKiller(BrokenProc())
    with pytest.raises(OSError):
        await killer.kill_leftovers(run_id("1"))
    killer.table = ProcessTable()
    assert await killer.kill_leftovers(run_id("2")) == []
