"""Can the daemon record runs right now? Its database answers and its disk has room."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from runyard.engine.writer import StoreWriter
from runyard.exceptions import DiskFull, StoreError

# Below this much free space the data dir's disk counts as full: a log record
# (256 KiB) and a few SQLite pages must still fit.
MIN_FREE_BYTES = 1024 * 1024
# How long a free-space reading or a database answer is trusted.
DISK_CHECK_SECONDS = 1.0
DATABASE_CHECK_SECONDS = 1.0
# A database that has not answered a trivial query by then counts as down.
PING_TIMEOUT_SECONDS = 3.0

DATABASE_CHECK = "database"
DISK_CHECK = "disk"
LEASE_CHECK = "lease"  # a node of several: whether it holds its lease (engine/fencing.py)
OK = "ok"


@dataclass(frozen=True)
class HealthReport:
    """What each check found: OK, or what is wrong."""

    checks: dict[str, str]

    @property
    def healthy(self) -> bool:
        return all(result == OK for result in self.checks.values())

    @property
    def reason(self) -> str | None:
        """Return what is wrong, in one line, or None when nothing is."""
        problems = [result for result in self.checks.values() if result != OK]
        return "; ".join(problems) or None


def with_lease(report: HealthReport, fenced: str | None) -> HealthReport:
    """Add a node's lease to `report`: OK, or why the node is fenced and starts no runs."""
    lease = OK if fenced is None else f"fenced, starting no runs: {fenced}"
    return HealthReport({**report.checks, LEASE_CHECK: lease})


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.0f} TB"


class DiskSpace:
    """Free space on the filesystem of the data dir, read at most once a second."""

    def __init__(
        self,
        path: Path,
        min_free: int = MIN_FREE_BYTES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._min_free = min_free
        self._monotonic = monotonic
        self._checked_at = -DISK_CHECK_SECONDS
        self._shortage: str | None = None

    def shortage(self) -> str | None:
        """Return how full the disk is ("0 B free on ..."), or None while it has room.

        The reading is at most DISK_CHECK_SECONDS old: triggers ask on every call.
        """
        if self._monotonic() - self._checked_at >= DISK_CHECK_SECONDS:
            return self.read()
        return self._shortage

    def read(self) -> str | None:
        """Return the shortage as the disk is now (see `shortage`)."""
        self._checked_at = self._monotonic()
        self._shortage = self._read()
        return self._shortage

    def refuse_if_full(self) -> None:
        """Raise DiskFull while the disk counts as full."""
        shortage = self.shortage()
        if shortage is not None:
            raise DiskFull(shortage)

    def _read(self) -> str | None:
        try:
            stats = os.statvfs(self._path)
        except OSError:
            return None  # not there yet, or gone: whatever writes there will say why
        # root may use the blocks a filesystem reserves for it; others may not.
        blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail
        free = blocks * stats.f_frsize
        if free >= self._min_free:
            return None
        return (
            f"{_human(free)} free on the disk of {self._path}, "
            f"runyard needs {_human(self._min_free)}"
        )


class HealthMonitor:
    """Answer health checks from the writer's state, a database ping and the free space."""

    def __init__(self, ping: Callable[[], None], writer: StoreWriter, disk: DiskSpace) -> None:
        self._ping = ping
        self._writer = writer
        self._disk = disk
        # Its own thread: a ping must not queue behind the requests that fill
        # the default pool, nor fill it while the database hangs.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runyard-health")
        self._database: str = OK
        self._database_at = -DATABASE_CHECK_SECONDS
        self._probe: asyncio.Future[str] | None = None

    async def check(self) -> HealthReport:
        """Return the state of the database and of the disk."""
        return HealthReport(
            {DATABASE_CHECK: await self._database_state(), DISK_CHECK: self._disk_state()}
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _disk_state(self) -> str:
        shortage = self._disk.read()
        return OK if shortage is None else f"disk full: {shortage}"

    async def _database_state(self) -> str:
        failure = self._writer.failing()
        if failure is not None:
            # The writer is trying again right now: reads may work (SQLite
            # locked by another writer), but runs cannot be recorded.
            return _unavailable(failure)
        loop = asyncio.get_running_loop()
        if loop.time() - self._database_at < DATABASE_CHECK_SECONDS:
            return self._database
        if self._probe is None:
            # One ping at a time, whoever asks meanwhile shares its answer.
            self._probe = loop.create_task(self._ping_once())
        return await asyncio.shield(self._probe)

    async def _ping_once(self) -> str:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._ping), PING_TIMEOUT_SECONDS
            )
            state = OK
        except StoreError as error:
            state = _unavailable(error)
        except TimeoutError:
            state = f"database unavailable: no answer within {PING_TIMEOUT_SECONDS:g}s"
        finally:
            self._probe = None
        self._database, self._database_at = state, loop.time()
        return state


def _unavailable(error: StoreError) -> str:
    if isinstance(error, DiskFull):
        return f"disk full: the database cannot grow ({error})"
    return f"database unavailable: {error}"
