"""Following a run's log: the lines already in its file, then the live ones, then its end.

`LogFollowers` fans each chunk the engine reads from a run's pipes out to the
run's followers. `follow_log` joins that live feed to the log file: it
subscribes first, replays the file, and drops what it sees twice, so a
follower gets every line once, in order, however its subscription and the
writer's flushes interleave. Transports (the SSE endpoint) only frame what
it yields.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from runyard.domain.models import Run
from runyard.engine.waiting import Closed, StopSignal, detach, first_of
from runyard.exceptions import NotFound
from runyard.store.logs import LogChunk, LogLine, read_lines

_MAX_PENDING = 10_000  # chunks a follower may lag behind before it is dropped
_REPLAY_BATCH = 1000  # lines read from the file per thread hop while replaying
_END_WAIT = 24 * 3600.0  # wait_for_end wants a bound; a log stream may follow a long run
_GAP_WAIT = 2.0  # how long lines missing from the file may take to be flushed to it
_GAP_POLL = 0.05
_RECHECK_SECONDS = 0.2  # how often the file is read again right after subscribing

# What follow_log yields: a line, None after `idle_seconds` with nothing new
# (time for a keepalive), and last the ended run.
FollowItem = LogLine | Run | None


class LogFollowers:
    """Per-run subscribers to new log chunks (asyncio, single event loop).

    Queues are unbounded, but a follower more than 10,000 chunks behind is
    dropped: its queue gets None (as if the run ended) so its handler ends,
    and the client resumes from the file (e.g. with Last-Event-ID).
    """

    def __init__(self) -> None:
        self._runs: dict[str, list[asyncio.Queue[LogChunk | None]]] = {}

    def subscribe(self, run_id: str) -> asyncio.Queue[LogChunk | None]:
        """Return a new queue of the run's chunks; None means the run ended."""
        queue: asyncio.Queue[LogChunk | None] = asyncio.Queue()
        self._runs.setdefault(run_id, []).append(queue)
        return queue

    def unsubscribe(self, run_id: str, queue: asyncio.Queue[LogChunk | None]) -> None:
        """Stop feeding `queue`; unknown queues are fine."""
        queues = self._runs.get(run_id)
        if queues is None:
            return
        with contextlib.suppress(ValueError):
            queues.remove(queue)
        if not queues:
            del self._runs[run_id]

    def publish(self, run_id: str, chunk: LogChunk) -> None:
        """Hand `chunk` to every follower of the run."""
        queues = self._runs.get(run_id)
        if not queues:
            return
        for queue in list(queues):
            if queue.qsize() >= _MAX_PENDING:
                self.unsubscribe(run_id, queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(chunk)

    def close_run(self, run_id: str) -> None:
        """Tell every follower of the run that it ended, and forget them."""
        for queue in self._runs.pop(run_id, []):
            queue.put_nowait(None)

    def has_followers(self, run_id: str) -> bool:
        return bool(self._runs.get(run_id))


class _Cursor:
    """The next line number the follower has not been given."""

    def __init__(self, path: Path, start: int) -> None:
        self.path = path
        self.next = start

    def take(self, lines: list[LogLine]) -> list[LogLine]:
        out = []
        for line in lines:
            if line.n >= self.next:  # lines seen both in the file and live go out once
                out.append(line)
                self.next = line.n + 1
        return out

    async def replay(self) -> AsyncIterator[LogLine]:
        while True:
            lines = await asyncio.to_thread(read_lines, self.path, self.next, _REPLAY_BATCH)
            for line in self.take(lines):
                yield line
            if len(lines) < _REPLAY_BATCH:
                return


async def _end_of(
    wait_for_end: Callable[[str, float], Awaitable[Run | None]], run_id: str
) -> Run | None:
    """Return the run once ended; None when it vanished (deleted by retention)."""
    try:
        return await wait_for_end(run_id, _END_WAIT)
    except NotFound:
        return None


async def _fill_gap(
    cursor: _Cursor, up_to: int, ended_task: asyncio.Future[Run | None], closing: StopSignal
) -> AsyncIterator[LogLine]:
    """Replay lines below `up_to` that went to the file before we subscribed.

    The writer batches records and flushes within ~0.1 s, so such lines can
    be missing from the file for a moment: poll it briefly. A gap that stays
    is output the log dropped (drop_old), and is left as it is.
    """
    deadline = asyncio.get_running_loop().time() + _GAP_WAIT
    while True:
        async for line in cursor.replay():
            yield line
        if cursor.next >= up_to or asyncio.get_running_loop().time() >= deadline:
            return
        if await first_of({"ended": ended_task}, closing, _GAP_POLL) is not None:
            return  # the run ended: the caller replays the complete file


async def follow_log(
    run_id: str,
    start: int,
    *,
    followers: LogFollowers,
    path: Path,
    wait_for_end: Callable[[str, float], Awaitable[Run | None]],
    get_run: Callable[[str], Awaitable[Run]],
    closing: StopSignal,
    idle_seconds: float,
) -> AsyncGenerator[FollowItem, None]:
    """Yield the run's log lines numbered from `start`, then the ended run.

    Lines already written are replayed from `path`, then live lines follow
    from `followers`; None comes after `idle_seconds` with nothing new. Ends
    without the run when the server closes (`closing`) or the run is deleted
    while followed.
    """
    # Subscribe before replaying the file: a line written in between is then in
    # the queue if it is not in the file, and the cursor drops the duplicates.
    queue = followers.subscribe(run_id)
    # Every way a run ends (even stopped while queued, with no process) resolves this.
    ended_task = asyncio.ensure_future(_end_of(wait_for_end, run_id))
    cursor = _Cursor(path, start)
    loop = asyncio.get_running_loop()
    # Lines written just before we subscribed may still sit in the log writer's
    # buffer, in neither the file nor our queue: look at the file again while
    # the writer's flush delay lasts, even if no newer line comes to show a gap.
    recheck_until = loop.time() + _GAP_WAIT
    try:
        async for line in cursor.replay():
            yield line
        while True:
            rechecking = loop.time() < recheck_until
            # Lines first: when both are ready, no line is lost.
            waits: dict[str, Any] = {"line": queue.get(), "ended": ended_task}
            outcome = await first_of(
                waits, closing, _RECHECK_SECONDS if rechecking else idle_seconds
            )
            if outcome is None:
                if rechecking:
                    async for line in cursor.replay():
                        yield line
                else:
                    yield None
                continue
            key, chunk = outcome
            if key == "ended":
                break
            if chunk is None:
                # Output over, or we fell too far behind and were dropped: follow
                # anew and catch up from the file. After a real end, only the
                # end itself comes next.
                followers.unsubscribe(run_id, queue)
                queue = followers.subscribe(run_id)
                async for line in cursor.replay():
                    yield line
                continue
            if chunk.first_line > cursor.next:
                async for line in _fill_gap(cursor, chunk.first_line, ended_task, closing):
                    yield line
            for line in cursor.take(chunk.lines()):
                yield line
        # The end is recorded after the log file is closed: the file now holds every line.
        async for line in cursor.replay():
            yield line
        yield ended_task.result() or await get_run(run_id)
    except (Closed, NotFound):
        return  # shutting down, or the run was deleted while followed
    finally:
        # No await here: this also runs while the stream is being cancelled.
        followers.unsubscribe(run_id, queue)
        detach(ended_task)
