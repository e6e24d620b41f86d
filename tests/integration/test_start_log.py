"""The list of started runs a crashed daemon leaves to the next one: a real file, real crashes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.engine import start_log
from runyard.engine.start_log import StartLog


@pytest.fixture(params=["mapped", "written"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test with the memory-mapped list, and with its write() fallback."""
    if request.param == "written":

        def no_room(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "posix_fallocate", no_room)
    mode: str = request.param
    return mode


def test_started_runs_survive_into_the_next_daemon(tmp_path: Path, mode: str) -> None:
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


def test_compaction_keeps_only_live_runs(tmp_path: Path, mode: str) -> None:
    log = StartLog(tmp_path / "started.log", lambda: ["live"])
    log.open()
    count = start_log.SIZE // 20 + 1000  # past the end of the file: compacted once
    for index in range(count):
        log.record(f"run-{index:05d}-xxxxxxxxxx")
    log.record("newest")
    log.close()
    leftovers = StartLog(tmp_path / "started.log", lambda: []).leftovers()
    assert {"live", "newest", f"run-{count - 1:05d}-xxxxxxxxxx"} <= leftovers
    assert "run-00000-xxxxxxxxxx" not in leftovers
    assert len(leftovers) < count


# A daemon that records two runs, then dies by SIGKILL with the log still open.
KILLED = """
import os, signal, sys
from pathlib import Path
from runyard.engine.start_log import StartLog
log = StartLog(Path(sys.argv[1]), lambda: [])
log.open()
log.record("before-the-crash-1")
log.record("before-the-crash-2")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_ids_recorded_by_a_daemon_killed_with_sigkill_are_read_back(tmp_path: Path) -> None:
    path = tmp_path / "started.log"
    died = subprocess.run([sys.executable, "-c", KILLED, str(path)], timeout=30)
    assert died.returncode == -signal.SIGKILL
    assert StartLog(path, lambda: []).leftovers() == {"before-the-crash-1", "before-the-crash-2"}


def test_record_before_open_is_ignored(tmp_path: Path) -> None:
    log = StartLog(tmp_path / "started.log", lambda: [])
    log.record("too-early")
    assert not (tmp_path / "started.log").exists()
