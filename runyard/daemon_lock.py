"""One daemon per data dir: an exclusive lock held for the daemon's whole life.

The lock is `flock` on `<data_dir>/daemon.lock`, which also records the pid of
the daemon holding it. The kernel drops the lock when that process ends, even
by `kill -9`, so a stale file never blocks a restart. The descriptor is not
inherited by the runs' processes (Python opens descriptors non-inheritable),
so a stray child of a dead daemon never keeps its data dir locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from runyard.exceptions import DataDirBusy

LOCK_FILE = "daemon.lock"


class DataDirLock:
    """The held lock on one data dir; `release` (or process exit) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Lock `data_dir` (created if missing) for this process; DataDirBusy if it is held."""
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirBusy(data_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        # Written only once the lock is ours: a daemon that finds the lock held
        # reads the holder's pid, never a half-written one of its own.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
