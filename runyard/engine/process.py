"""One child process: spawn it in its own process group, drain its output, signal it.

The child is never blocked by runyard: its pipes are read by the event loop as
fast as it writes, and each chunk goes straight into the run's log writer.

Where the kernel has pidfds (Linux 5.3+), a child is started with
`subprocess.Popen` and watched directly: its two pipes and its pidfd go into
one epoll set shared by every child (`_ChildEvents`), which is itself one
reader on the event loop (`_PipedChild`). asyncio's subprocess transport does
the same with far more on the way (a transport and a protocol object per pipe,
a task to connect them, the child watcher, callbacks scheduled through
`call_soon` at each step, and three selector registrations, each a few Python
calls and a KeyError): for a short run that bookkeeping cost more of the event
loop than the spawn itself (see "Where the time goes" in docs/DESIGN.md).
Elsewhere asyncio's transport is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import select
import signal
import subprocess
import sys
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

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
_READ_SIZE = 256 * 1024  # bytes per read of a pipe, as asyncio's pipe transport reads


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

    def release(self) -> None:
        """Drop the run's callback once its output is done.

        The callback holds the engine's record of the run, which holds this
        protocol: without this, every ended run would wait for the garbage
        collector instead of being freed as it ends.
        """
        self._on_log_full = _ignore

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _ignore() -> None:
    pass


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


class _Transport(Protocol):
    """What ChildProcess uses of a child's transport (asyncio's, or a _PipedChild)."""

    def get_pid(self) -> int: ...

    def get_returncode(self) -> int | None: ...

    def close(self) -> None: ...


class _ChildEvents:
    """One epoll set for the pipes and pidfds of every child, read when the loop says so.

    Registering a descriptor here is one system call; with the loop's
    add_reader it is a selector key, a handle and a lookup that raises.
    Level-triggered: whatever a callback leaves unread is reported again.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        # The loop holds this object through its reader, never the other way
        # round: when the loop goes, so does the epoll set.
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = callback

    def remove(self, fd: int) -> None:
        """Stop watching `fd`; call before closing it."""
        if self._callbacks.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def _dispatch(self) -> None:
        for fd, _events in self._epoll.poll(0):
            # A callback may have removed a descriptor reported in this round,
            # and its number may even be another's by now: each callback
            # copes with being called when nothing is ready.
            callback = self._callbacks.get(fd)
            if callback is not None:
                callback()


_child_events: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ChildEvents] = (
    weakref.WeakKeyDictionary()
)


def _events_of(loop: asyncio.AbstractEventLoop) -> _ChildEvents:
    events = _child_events.get(loop)
    if events is None:
        events = _child_events[loop] = _ChildEvents(loop)
    return events


class _PipedChild:
    """A started child, its stdout, stderr and exit (pidfd) watched through _ChildEvents.

    It drives an _OutputProtocol as asyncio's subprocess transport would:
    pipe_data_received and pipe_connection_lost per pipe, process_exited once
    the child is reaped, connection_lost once both pipes are closed and the
    child is reaped.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pid: int,
        popen: subprocess.Popen[bytes] | None,
        pidfd: int,
        pipes: dict[int, int],
        protocol: _OutputProtocol,
    ) -> None:
        self._events = _events_of(loop)
        self._pid = pid
        self._popen = popen  # None: started by posix_spawn
        self._returncode: int | None = None
        self._pidfd: int | None = pidfd
        self._pipes = pipes  # our read end -> the child's fd (1 or 2), while open
        self._protocol = protocol
        self._lost = False
        for read_end, child_fd in pipes.items():
            self._events.add(read_end, functools.partial(self._read, read_end, child_fd))
        self._events.add(pidfd, self._reap)

    def get_pid(self) -> int:
        return self._pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def _read(self, read_end: int, child_fd: int) -> None:
        try:
            data = os.read(read_end, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._close_pipe(read_end, error)
            return
        if data:
            self._protocol.pipe_data_received(child_fd, data)
        else:
            self._close_pipe(read_end, None)

    def _close_pipe(self, read_end: int, error: Exception | None) -> None:
        child_fd = self._pipes.pop(read_end, None)
        if child_fd is None:
            return
        self._events.remove(read_end)
        os.close(read_end)
        self._protocol.pipe_connection_lost(child_fd, error)
        self._maybe_lost()

    def _reap(self) -> None:
        pidfd = self._pidfd
        if pidfd is None:
            return
        try:
            # WNOHANG: a stale report (see _ChildEvents) must not block the loop.
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped by someone else: its status is lost (asyncio says 255 too).
            code = 255
        else:
            if pid == 0:
                return  # still running
            code = os.waitstatus_to_exitcode(status)
        self._events.remove(pidfd)
        os.close(pidfd)
        self._pidfd = None
        self._returncode = code
        if self._popen is not None:
            # A Popen whose returncode is None would be polled for ever after.
            self._popen.returncode = code
        self._protocol.process_exited()
        self._maybe_lost()

    def _maybe_lost(self) -> None:
        if not self._pipes and self._pidfd is None and not self._lost:
            self._lost = True
            self._protocol.connection_lost(None)

    def close(self) -> None:
        """Stop reading the pipes (whatever is left in them is dropped); keep reaping."""
        for read_end in list(self._pipes):
            self._close_pipe(read_end, None)


class ChildProcess:
    """A started child; `wait()` returns its exit code once it and its pipes are done."""

    def __init__(self, transport: _Transport, protocol: _OutputProtocol) -> None:
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
        self._protocol.release()
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
    protocol = _OutputProtocol(run_id, log, followers, clock, on_log_full, keeps_newest, mask)
    if _pidfds_work():
        return ChildProcess(_spawn_piped(loop, argv, env, cwd, umask, run_as, protocol), protocol)
    transport, _ = await loop.subprocess_exec(
        lambda: protocol,
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


_devnull: int | None = None  # /dev/null, opened once: every child's stdin
_pidfd_support: bool | None = None


def _pidfds_work() -> bool:
    global _pidfd_support
    if _pidfd_support is None:
        try:
            os.close(os.pidfd_open(os.getpid()))
            _pidfd_support = True
        except (AttributeError, OSError):
            _pidfd_support = False
    return _pidfd_support


def _spawn_piped(
    loop: asyncio.AbstractEventLoop,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None,
    umask: int | None,
    run_as: RunAs | None,
    protocol: _OutputProtocol,
) -> _PipedChild:
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    popen: subprocess.Popen[bytes] | None = None
    try:
        if cwd is None and umask is None and run_as is None and os.sep in argv[0]:
            pid = _posix_spawn(argv, env, _devnull, out_write, err_write)
        else:
            popen = subprocess.Popen(
                argv,
                stdin=_devnull,
                stdout=out_write,
                stderr=err_write,
                cwd=cwd,
                env=env,
                start_new_session=True,
                umask=-1 if umask is None else umask,
                user=None if run_as is None else run_as.uid,
                group=None if run_as is None else run_as.gid,
                extra_groups=None if run_as is None else list(run_as.groups),
            )
            pid = popen.pid
    except BaseException:
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        # The child holds its own copies: EOF comes when it (and anything it
        # left holding them) closes them.
        os.close(out_write)
        os.close(err_write)
    # Only our ends: the child's are blocking, as a process expects of its stdout.
    os.set_blocking(out_read, False)
    os.set_blocking(err_read, False)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        # pidfd_open cannot fail for a child not reaped yet but for lack of
        # descriptors: kill it rather than leave it unwatched.
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if popen is not None:
            popen.returncode = -signal.SIGKILL
        os.close(out_read)
        os.close(err_read)
        raise
    return _PipedChild(loop, pid, popen, pidfd, {out_read: _STDOUT, err_read: _STDERR}, protocol)


# What Popen's restore_signals resets: Python ignores these, and an ignored
# signal stays ignored across exec.
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)
_descriptors_private = False


def _posix_spawn(
    argv: Sequence[str], env: Mapping[str, str], stdin: int, stdout: int, stderr: int
) -> int:
    """Start `argv[0]` (a path) in a new session, as Popen would; return its pid.

    Popen costs ~0.1 ms more of the event loop per child than posix_spawn
    (its bookkeeping is Python; posix_spawn's is C), and most tasks need
    nothing Popen has and posix_spawn lacks (a working_dir, a umask, a user).
    The one difference: Popen closes every descriptor but 0-2 in the child,
    posix_spawn only those marked close-on-exec. Python marks every
    descriptor it makes so (PEP 446); those runyard inherited are marked
    once, before its first child.
    """
    global _descriptors_private
    if not _descriptors_private:
        _keep_descriptors_private()
        _descriptors_private = True
    return os.posix_spawn(
        argv[0],
        list(argv),
        env,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, stdin, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2),
        ],
        setsid=True,
        setsigdef=_DEFAULT_SIGNALS,
    )


def _keep_descriptors_private() -> None:
    """Mark every open descriptor above 2 close-on-exec: runs get none of runyard's."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
