"""One child process: spawn it in its own process group, drain its output, signal it.

The child is never blocked by runyard: its pipes are read by the event loop as
fast as it writes, and each chunk goes straight into the run's log writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from runyard.clock import Clock
from runyard.engine.identity import RunAs
from runyard.engine.log_follow import LogFollowers
from runyard.store.logs import LineSplitter, LogChunk, LogWriter

_STDOUT = 1
_STDERR = 2
_STREAMS = {_STDOUT: "out", _STDERR: "err"}
_STDERR_TAIL_BYTES = 4096  # what the run's description quotes of a failure
_PIPE_DRAIN_GRACE = 5.0  # seconds to wait for pipes held open by escaped descendants
_FLUSH_DELAY = 0.1  # readers of the log file see new output at most this late


class _OutputProtocol(asyncio.SubprocessProtocol):
    """Turn pipe chunks into log records; note when the process and its pipes are done."""

    def __init__(
        self,
        run_id: str,
        log: LogWriter,
        followers: LogFollowers,
        clock: Clock,
        on_log_full: Callable[[], None],
        keeps_newest: bool,
        mask: tuple[bytes, ...] = (),
    ) -> None:
        self._run_id = run_id
        self._mask = mask  # secret values, printed as *** wherever the output goes
        self._log = log
        self._followers = followers
        self._clock = clock
        self._on_log_full = on_log_full
        # drop_old keeps the newest lines of an oversized chunk; the others keep the first.
        self._log_keeps_newest = keeps_newest
        self._splitters = {fd: LineSplitter() for fd in _STREAMS}
        self.stderr_tail: deque[bytes] = deque()
        self._stderr_tail_size = 0
        self._flush_timer: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        lines, count = self._splitters[fd].feed(data)
        if count:
            self._record(fd, lines, count)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        lines, count = self._splitters[fd].finish()
        if count:
            self._record(fd, lines, count)

    def _record(self, fd: int, lines: bytes, count: int) -> None:
        for secret in self._mask:
            lines = lines.replace(secret, b"***")
        at = self._clock()
        stream = _STREAMS[fd]
        first, kept = self._log.append(stream, lines, count, at)
        if fd == _STDERR:
            self._remember_stderr(lines)
        if kept and self._followers.has_followers(self._run_id):
            if kept != count:
                lines = _kept_part(lines, kept, newest=self._log_keeps_newest)
            self._followers.publish(self._run_id, LogChunk(first, at, stream, lines, kept))
        if self._log.overflowed:
            self._on_log_full()
        if self._flush_timer is None:
            # Writes are batched; a short timer bounds how stale the file looks to readers.
            self._flush_timer = asyncio.get_running_loop().call_later(_FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        self._log.flush()

    def cancel_flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _remember_stderr(self, lines: bytes) -> None:
        self.stderr_tail.append(lines[-_STDERR_TAIL_BYTES:])
        self._stderr_tail_size += min(len(lines), _STDERR_TAIL_BYTES)
        while self._stderr_tail_size > _STDERR_TAIL_BYTES and len(self.stderr_tail) > 1:
            self._stderr_tail_size -= len(self.stderr_tail.popleft())

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _kept_part(lines: bytes, kept: int, *, newest: bool) -> bytes:
    """Return the `kept` lines the log writer kept of `lines`: its first or its last ones."""
    if newest:
        cut = len(lines) - 1
        for _ in range(kept):
            cut = lines.rfind(b"\n", 0, cut)
        return lines[cut + 1 :]
    cut = -1
    for _ in range(kept):
        cut = lines.find(b"\n", cut + 1)
    return lines[: cut + 1]


class ChildProcess:
    """A started child; `wait()` returns its exit code once it and its pipes are done."""

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _OutputProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.pid: int = transport.get_pid()

    def signal_group(self, signum: int) -> None:
        """Send `signum` to the child's whole process group (its descendants too)."""
        # The child leads its own session, so its pid is its process group id;
        # ESRCH means everyone in it has already exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    @property
    def has_exited(self) -> bool:
        return self._protocol.exited.done()

    async def wait(self) -> int:
        """Wait for exit, reap leftovers of the group, drain the pipes; return the exit code.

        A signal death is reported the way shells do, 128 + the signal number.
        """
        await self._protocol.exited
        # Descendants left in the group would hold the pipes open and outlive
        # the run; the run is over, so they go with it.
        self.signal_group(signal.SIGKILL)
        if not self._protocol.closed.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._protocol.closed), _PIPE_DRAIN_GRACE)
            except TimeoutError:
                self._transport.close()
        code = self._transport.get_returncode()
        self._transport.close()
        self._protocol.cancel_flush()
        if code is None:
            return -1
        return 128 - code if code < 0 else code

    def stderr_tail(self, max_lines: int = 10) -> list[str]:
        text = b"".join(self._protocol.stderr_tail).decode("utf-8", errors="replace")
        return text.splitlines()[-max_lines:]


def use_pidfd_child_watcher() -> None:
    """On Python 3.11, watch children with pidfds instead of a thread per child.

    Python 3.12 does this by default; 3.11 starts one waitpid thread for every
    process, which costs more than the process itself for short runs.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    policy = asyncio.get_event_loop_policy()
    loop = asyncio.get_running_loop()
    current = getattr(policy, "_watcher", None)
    # On 3.11 a pidfd watcher serves the one loop it is attached to.
    if isinstance(current, asyncio.PidfdChildWatcher) and getattr(current, "_loop", None) is loop:
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return  # a kernel or sandbox without pidfds keeps the threaded watcher
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(loop)
    policy.set_child_watcher(watcher)


async def spawn(
    *,
    run_id: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None,
    log: LogWriter,
    followers: LogFollowers,
    clock: Clock,
    on_log_full: Callable[[], None],
    keeps_newest: bool = False,
    mask: tuple[bytes, ...] = (),
    umask: int | None = None,
    run_as: RunAs | None = None,
) -> ChildProcess:
    """Start `argv` in a new session; raise OSError when it cannot be started.

    With `run_as`, the process drops to that user, their group and their
    supplementary groups before it runs `argv` (the daemon must be root).
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _OutputProtocol(run_id, log, followers, clock, on_log_full, keeps_newest, mask),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
        umask=-1 if umask is None else umask,
        user=None if run_as is None else run_as.uid,
        group=None if run_as is None else run_as.gid,
        extra_groups=None if run_as is None else list(run_as.groups),
    )
    return ChildProcess(transport, protocol)
