"""Runs a dead daemon had started, and the processes they left behind.

Right before a run's process is spawned, its id is appended to `started.log`
(one write, no fsync: it survives the daemon being killed, and costs next to
nothing). If the daemon dies hard (kill -9, the OOM killer), the next daemon
knows every run that had a process, even one whose `running` status had not
reached the database yet, and ends them all as crashed.

Their processes live on in their own process groups. Every run's process
carries `RUNYARD_RUN_ID` in its environment, and so do its descendants, so the
next daemon finds them in /proc and kills their groups: a pid the kernel has
given to an unrelated process since is never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

_COMPACT_AT = 1024 * 1024  # bytes; then the file is rewritten with the live runs only
_RUN_ID_VARIABLE = b"RUNYARD_RUN_ID="


class StartLog:
    """An append-only list of the runs whose process was (about to be) started."""

    def __init__(self, path: Path, live: Callable[[], Iterable[str]]) -> None:
        self._path = path
        self._live = live  # ids of the runs with a process right now
        self._fd: int | None = None
        self._size = 0

    def leftovers(self) -> set[str]:
        """Return the run ids an earlier daemon recorded."""
        with contextlib.suppress(FileNotFoundError):
            text = self._path.read_text(encoding="ascii", errors="replace")
            return {line for line in text.splitlines() if line}
        return set()

    def open(self) -> None:
        """Start a fresh list; call once the leftovers have been dealt with."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self._size = 0

    def record(self, run_id: str) -> None:
        if self._fd is None:
            return
        line = f"{run_id}\n".encode("ascii")
        os.write(self._fd, line)
        self._size += len(line)
        if self._size > _COMPACT_AT:
            self._compact()

    def _compact(self) -> None:
        text = "".join(f"{run_id}\n" for run_id in self._live())
        fresh = self._path.with_suffix(".tmp")
        fresh.write_text(text, encoding="ascii")
        os.replace(fresh, self._path)
        self.close()
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
        self._size = len(text)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def kill_strays(run_ids: set[str], proc: Path = Path("/proc")) -> dict[str, list[int]]:
    """SIGKILL the process groups of processes that belong to these runs.

    Return, per run id, the process groups killed.
    """
    if not run_ids:
        return {}
    wanted = {_RUN_ID_VARIABLE + run_id.encode("ascii", "replace"): run_id for run_id in run_ids}
    killed: dict[str, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone already, or not ours to read
        for variable in environ.split(b"\0"):
            run_id = wanted.get(variable)
            if run_id is None:
                continue
            try:
                group = os.getpgid(int(entry.name))
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                break
            if group not in killed.setdefault(run_id, []):
                killed[run_id].append(group)
            break
    return killed
