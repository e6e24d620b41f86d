"""The data-dir lock: one holder at a time, its pid recorded, released when it ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.daemon_lock import LOCK_FILE, DataDirLock
from runyard.exceptions import DataDirBusy

HOLD = """
import sys, time
from pathlib import Path
from runyard.daemon_lock import DataDirLock
lock = DataDirLock.acquire(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_lock_on_a_held_data_dir_names_the_holder(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path / "data")
    try:
        with pytest.raises(DataDirBusy) as refused:
            DataDirLock.acquire(tmp_path / "data")
        assert refused.value.pid == os.getpid()
        assert str(tmp_path / "data") in str(refused.value)
        assert f"pid {os.getpid()}" in str(refused.value)
    finally:
        first.release()
    DataDirLock.acquire(tmp_path / "data").release()


def test_the_lock_file_is_the_owners_only(tmp_path: Path) -> None:
    lock = DataDirLock.acquire(tmp_path / "data")
    try:
        assert (tmp_path / "data" / LOCK_FILE).stat().st_mode & 0o777 == 0o600
    finally:
        lock.release()


def test_a_killed_holder_leaves_no_lock_behind(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "data")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirBusy) as refused:
            DataDirLock.acquire(tmp_path / "data")
        assert refused.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # kill -9 cannot release anything by itself: the kernel drops the lock.
    DataDirLock.acquire(tmp_path / "data").release()
