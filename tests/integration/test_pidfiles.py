"""Strays of a dead daemon: killed when they are the same process, spared when not."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runyard.engine.pidfiles import PidFiles


def _spawn_group() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_kill_leftover_kills_the_recorded_group(tmp_path: Path) -> None:
    files = PidFiles(tmp_path / "pids")
    child = _spawn_group()
    files.record("run-1", child.pid)
    assert files.kill_leftover("run-1") == child.pid
    assert child.wait(timeout=5) == -9
    assert not (tmp_path / "pids" / "run-1").exists()


def test_a_reused_pid_is_left_alone(tmp_path: Path) -> None:
    files = PidFiles(tmp_path / "pids")
    child = _spawn_group()
    try:
        # Same pid, but a start time that is not this process's: another process.
        (tmp_path / "pids").mkdir()
        (tmp_path / "pids" / "run-2").write_text(f"{child.pid} 1\n")
        assert files.kill_leftover("run-2") is None
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_missing_or_garbled_files_are_ignored(tmp_path: Path) -> None:
    files = PidFiles(tmp_path / "pids")
    assert files.kill_leftover("never-recorded") is None
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "bad").write_text("not a pid")
    assert files.kill_leftover("bad") is None
    files.record("x", 1)  # pid 1 is never ours to kill; the start time guard spares it
    files.forget_all_but({"x"})
    assert [p.name for p in (tmp_path / "pids").iterdir()] == ["x"]
    files.forget_all_but(set())
    assert list((tmp_path / "pids").iterdir()) == []
