"""Processes runs leave behind: found by the run id in their environment, and killed.

A run's process lives in its own process group, which is SIGKILLed when the
process exits. A descendant that made a group or session of its own (`setsid`,
a daemonising double fork) escapes that kill, and would live on. Every run's
process carries `RUNYARD_RUN_ID` in its environment, and so do its
descendants: when a run ends, `StrayKiller` finds them in /proc and kills their
groups before the run's end is recorded; after a crash, the next daemon does
the same for the runs `started.log` names. A pid the kernel has given to an
unrelated process since is never touched.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from runyard.domain.run_environment import RUN_ID_ENV

_RUN_ID_VARIABLE = RUN_ID_ENV.encode() + b"="
# A process may fork between the listing of /proc and the kill of its group;
# its child is caught by the next pass. A fork bomb could outrun any number.
_MAX_PASSES = 5
# SIGKILL is not instant (a process in an uninterruptible sleep finishes it
# first); a kill returns once the killed are gone, or after this many seconds.
_DEATH_WAIT = 2.0
_DEATH_POLL = 0.005
# Between two scans for ended runs: at least this long, and this many times
# as long as the last scan took (see StrayKiller).
_MIN_PAUSE = 0.005
_PACE = 10


class ProcessTable:
    """Which run, if any, each live process belongs to: read from /proc, remembered.

    A process gets a run's id in its environment by being forked (or exec'd) by
    that run's processes, so a process seen once keeps its answer for as long as
    it lives, and a scan reads the environment of new processes only. A live
    process is told apart from a later one with the same pid by the inode of its
    /proc entry, which the kernel allocates afresh for every process.
    """

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = str(proc)
        # (pid, inode of its /proc entry) -> the run id in its environment, and
        # the other way round; pids stay text, as /proc lists them.
        self._owners: dict[tuple[str, int], str | None] = {}
        self._members_of: dict[str, set[tuple[str, int]]] = {}
        # Hunts come one at a time from StrayKiller; recovery may call from another thread.
        self._lock = threading.Lock()

    def kill_runs(self, run_ids: Collection[str]) -> dict[str, list[int]]:
        """SIGKILL the process groups of every process carrying one of these run ids.

        Return, per run id, the process groups killed; once this returns, the
        processes found are gone (or zombies), unless one ignored SIGKILL for
        `_DEATH_WAIT` seconds. The daemon's own process group is never killed.
        """
        if not run_ids:
            return {}
        wanted = set(run_ids)
        killed: dict[str, list[int]] = {}
        victims: set[tuple[str, int]] = set()  # found in any pass, killed or not
        doomed: set[int] = set()
        own_group = os.getpgrp()
        with self._lock:
            for _ in range(_MAX_PASSES):
                found = False
                for key, run_id in self._members(wanted):
                    if key in victims:
                        continue
                    victims.add(key)
                    found = True
                    pid = int(key[0])
                    try:
                        group = os.getpgid(pid)
                        if group == own_group:
                            continue
                        os.killpg(group, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        continue
                    doomed.add(pid)
                    groups = killed.setdefault(run_id, [])
                    if group not in groups:
                        groups.append(group)
                if not found:
                    break
        self._wait_gone(doomed)
        return killed

    def _members(self, wanted: set[str]) -> Iterator[tuple[tuple[str, int], str]]:
        """Yield ((pid, inode), run id) for the live processes of the wanted runs."""
        # Set operations, not a Python loop per process: this runs in a thread
        # beside the event loop, and every bytecode it runs holds the GIL.
        with os.scandir(self._proc) as entries:
            listing = {(entry.name, entry.inode()) for entry in entries}
        owners = self._owners
        own_pid = str(os.getpid())
        for key in owners.keys() - listing:
            self._forget(key)
        for key in listing - owners.keys():
            if not key[0].isdigit():
                owners[key] = None  # /proc/self, /proc/sys...
                continue
            owner = self._owner(key[0])
            if key[1] > 1:
                self._remember(key, owner)
            elif owner in wanted and key[0] != own_pid:
                yield key, owner  # not remembered, so not found below
        for run_id in wanted:
            for key in list(self._members_of.get(run_id, ())):
                # Read again: it may have exec'd with a clean environment since.
                owner = self._owner(key[0])
                if owner != run_id:
                    self._forget(key)
                    self._remember(key, owner)
                if owner in wanted and key[0] != own_pid:
                    yield key, owner

    def _remember(self, key: tuple[str, int], owner: str | None) -> None:
        # An inode of 0 or 1 is what the kernel reports when it could not make
        # one: such an entry is read again at every scan instead.
        if key[1] <= 1:
            return
        self._owners[key] = owner
        if owner is not None:
            self._members_of.setdefault(owner, set()).add(key)

    def _forget(self, key: tuple[str, int]) -> None:
        owner = self._owners.pop(key, None)
        members = self._members_of.get(owner) if owner is not None else None
        if owner is not None and members is not None:
            members.discard(key)
            if not members:
                del self._members_of[owner]

    def _owner(self, pid: str) -> str | None:
        try:
            with open(f"{self._proc}/{pid}/environ", "rb") as file:
                environ = file.read()
        except OSError:
            return None  # gone already, or not ours to read
        if environ.startswith(_RUN_ID_VARIABLE):
            start = len(_RUN_ID_VARIABLE)
        else:
            start = environ.find(b"\0" + _RUN_ID_VARIABLE)
            if start < 0:
                return None
            start += 1 + len(_RUN_ID_VARIABLE)
        end = environ.find(b"\0", start)
        value = environ[start:] if end < 0 else environ[start:end]
        return value.decode("ascii", "replace")

    def _wait_gone(self, pids: set[int]) -> None:
        deadline = time.monotonic() + _DEATH_WAIT
        while pids and time.monotonic() < deadline:
            pids = {pid for pid in pids if self._is_alive(pid)}
            if pids:
                time.sleep(_DEATH_POLL)

    def _is_alive(self, pid: int) -> bool:
        try:
            with open(f"{self._proc}/{pid}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            return False
        # The state follows the command name, which may itself hold ") ".
        state = stat.rpartition(b")")[2].split(maxsplit=1)[:1]
        return state not in ([b"Z"], [b"X"])


def kill_strays(run_ids: set[str], proc: Path = Path("/proc")) -> dict[str, list[int]]:
    """SIGKILL the process groups of processes that belong to these runs.

    Return, per run id, the process groups killed.
    """
    return ProcessTable(proc).kill_runs(run_ids)


class StrayKiller:
    """Kill what runs left behind as they end; runs ending together share one /proc scan.

    One scan runs at a time, in a thread; runs that end meanwhile wait for the
    next one, which takes them all. Listing /proc costs the same for one run
    as for fifty, so under a stream of short runs each scan is followed by a
    pause of `_PACE` times its duration: the scans then take a small, bounded
    share of a CPU, and each run waits for at most a pause and two scans. A
    run ending after a quiet spell is scanned for at once.
    """

    def __init__(self, table: ProcessTable | None = None) -> None:
        self.table = table or ProcessTable()
        self._waiting: dict[str, list[asyncio.Future[list[int]]]] = {}
        self._busy = False  # a scan is running, or due
        self._next_scan_at = 0.0  # loop time

    async def kill_leftovers(self, run_id: str) -> list[int]:
        """Kill the processes carrying `run_id`; return the process groups killed.

        Raise OSError when /proc cannot be read (or RuntimeError while the loop closes).
        """
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(run_id, []).append(future)
        if not self._busy:
            self._schedule()
        return await future

    def _schedule(self) -> None:
        self._busy = True
        loop = asyncio.get_running_loop()
        delay = self._next_scan_at - loop.time()
        if delay > 0:
            loop.call_later(delay, self._scan_waiting)
        else:
            self._scan_waiting()

    def _scan_waiting(self) -> None:
        batch, self._waiting = self._waiting, {}
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            scan = loop.run_in_executor(None, self.table.kill_runs, list(batch))
        except RuntimeError as error:  # the executor is shut down: the loop is closing
            failed: asyncio.Future[dict[str, list[int]]] = loop.create_future()
            failed.set_exception(error)
            self._scanned(batch, started, failed)
            return
        scan.add_done_callback(lambda done: self._scanned(batch, started, done))

    def _scanned(
        self,
        batch: dict[str, list[asyncio.Future[list[int]]]],
        started: float,
        scan: asyncio.Future[dict[str, list[int]]],
    ) -> None:
        now = asyncio.get_running_loop().time()
        self._next_scan_at = now + max(_MIN_PAUSE, _PACE * (now - started))
        self._busy = False
        error = None if scan.cancelled() else scan.exception()
        for run_id, futures in batch.items():
            for future in futures:
                if future.done():
                    continue
                if scan.cancelled():
                    future.cancel()
                elif error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(scan.result().get(run_id, []))
        if self._waiting:
            self._schedule()
