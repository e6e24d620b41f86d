"""Remember which process group each running run has, so a restart can end strays.

When the daemon dies hard (kill -9, power cut in a VM that resumes), its runs'
processes live on in their own process groups. The next daemon records those
runs as crashed, so it must also make sure they are really gone: it kills the
group if the same process (same pid and kernel start time) still exists.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """Return the kernel's start time of `pid` (clock ticks since boot), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count from its ")".
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


class PidFiles:
    """One small file per running run: `<pid> <start time>`."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def record(self, run_id: str, pid: int) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        (self._directory / run_id).write_text(f"{pid} {_start_time(pid) or ''}\n", encoding="ascii")

    def forget(self, run_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._directory / run_id).unlink()

    def kill_leftover(self, run_id: str) -> int | None:
        """Kill the run's process group if its leader still runs; return its pid if killed."""
        path = self._directory / run_id
        try:
            pid_text, _, started = path.read_text(encoding="ascii").strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        finally:
            self.forget(run_id)
        # A pid reused by an unrelated process has another start time: leave it alone.
        if not started or _start_time(pid) != started:
            return None
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return None
        return pid

    def forget_all_but(self, run_ids: set[str]) -> None:
        """Remove files of runs that are not running any more."""
        if not self._directory.is_dir():
            return
        for path in self._directory.iterdir():
            if path.name not in run_ids:
                self.forget(path.name)
