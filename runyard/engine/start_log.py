"""The runs whose process was (about to be) started: what a crashed daemon leaves to the next.

Right before a run's process is spawned, its id is added to `started.log`. If
the daemon dies hard (kill -9, the OOM killer), the next daemon knows every
run that had a process, even one whose `running` status had not reached the
database yet, ends them all as crashed, and kills what they left behind.

The file is mapped into memory, with its blocks reserved up front: adding an
id is a copy into the page cache, no system call, and the kernel writes the
pages back on its own. A daemon killed with -9 leaves the pages to the kernel,
so the next daemon reads every id (a power cut may lose the newest, as it may
lose any unsynced write). Where blocks cannot be reserved (a full disk, a file
system without fallocate), the ids are appended with write() instead.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from runyard.store.files import PRIVATE_FILE_MODE, make_private_directory

STARTED_LOG = "started.log"  # in the data dir
SIZE = 1024 * 1024  # bytes; when full, the file is rewritten with the live runs only


class StartLog:
    """An append-only list of the runs whose process was (about to be) started."""

    def __init__(self, path: Path, live: Callable[[], Iterable[str]]) -> None:
        self._path = path
        self._live = live  # ids of the runs with a process right now
        self._fd: int | None = None
        self._map: mmap.mmap | None = None  # None: appending with write()
        self._size = 0  # bytes used

    def leftovers(self) -> set[str]:
        """Return the run ids an earlier daemon recorded."""
        with contextlib.suppress(FileNotFoundError):
            text = self._path.read_bytes().replace(b"\0", b"").decode("ascii", "replace")
            return {line for line in text.splitlines() if line}
        return set()

    def open(self) -> None:
        """Start a fresh list; call once the leftovers have been dealt with."""
        make_private_directory(self._path.parent)
        self._fd, self._map = _create(self._path, b"")
        self._size = 0

    def record(self, run_id: str) -> None:
        if self._fd is None:
            return
        line = f"{run_id}\n".encode("ascii")
        if self._size + len(line) > SIZE:
            self._compact()
        if self._map is not None:
            self._map[self._size : self._size + len(line)] = line
        else:
            os.write(self._fd, line)
        self._size += len(line)

    def _compact(self) -> None:
        text = "".join(f"{run_id}\n" for run_id in self._live()).encode("ascii")
        fresh = self._path.with_suffix(".tmp")
        fd, mapped = _create(fresh, text)
        os.replace(fresh, self._path)
        self.close()
        self._fd, self._map, self._size = fd, mapped, len(text)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _create(path: Path, text: bytes) -> tuple[int, mmap.mmap | None]:
    """Create `path` holding `text`; return its descriptor and its mapping (None: no map)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        # Reserved blocks: a store into the mapping can then never need a block
        # the disk does not have, which would kill the daemon with SIGBUS.
        os.posix_fallocate(fd, 0, SIZE)
        mapped = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError:
        os.ftruncate(fd, 0)  # whatever fallocate reserved before failing
        os.lseek(fd, 0, os.SEEK_END)
        os.write(fd, text)
        return fd, None
    mapped[: len(text)] = text
    return fd, mapped
