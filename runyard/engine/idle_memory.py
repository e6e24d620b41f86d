"""Memory given back to the system once the engine goes idle after runs.

A burst of runs leaves the daemon holding more than it needs once the burst
is over: reference cycles (each HTTP connection leaves a few, through
asyncio's transport and uvicorn's protocol) wait for a full collection that
the daemon's collector thresholds make rare (api/server.py, for throughput),
and memory freed by C code stays with glibc's allocator. Left alone, the
idle daemon's RSS creeps up with every burst (bench/memory.py: +15 % over
100,000 runs). So once a run has ended and, IDLE_DELAY_S later, no run is
running or queued, the engine runs one full collection and asks glibc to
return its free pages (`malloc_trim`). A daemon that is never idle never
pays for it; one that idles pays a few milliseconds per burst.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable
from typing import Any

from runyard.engine.timers import CallLater, Timer

log = logging.getLogger("runyard.engine")

IDLE_DELAY_S = 1.0  # how long nothing must run or wait before memory is given back


def give_back_memory() -> None:
    """Collect every generation, then return glibc's free heap pages to the system."""
    gc.collect()
    trim = _glibc_malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _glibc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (musl, macOS); looked up on first use."""
    import ctypes  # only once runs have ended: ctypes is not part of the idle daemon

    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class IdleMemory:
    """Give memory back IDLE_DELAY_S after a run ended, once nothing runs or waits."""

    def __init__(
        self,
        is_idle: Callable[[], bool],
        call_later: CallLater,
        give_back: Callable[[], None] = give_back_memory,
    ) -> None:
        self._is_idle = is_idle
        self._call_later = call_later
        self._give_back = give_back
        self._timer: Timer | None = None
        self._closed = False

    def on_event(self, kind: str, _data: dict[str, Any]) -> None:
        """An engine event listener: a run's end arms the idle check."""
        if kind == "run.ended" and self._timer is None and not self._closed:
            self._timer = self._call_later(IDLE_DELAY_S, self._check)

    def _check(self) -> None:
        self._timer = None
        # Busy: nothing to do now; the end of the last run running arms it again.
        if self._closed or not self._is_idle():
            return
        try:
            self._give_back()
        except Exception:  # noqa: BLE001 - housekeeping must never disturb the engine
            log.exception("could not give memory back")

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
