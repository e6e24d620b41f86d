"""Run logs: JSON pages, raw text, and a live SSE stream that resumes by line number."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import NonNegativeInt
from pydantic.json_schema import SkipJsonSchema

from runyard.api import schemas
from runyard.api.deps import Closing, ClosingDep, RunyardDep, SchemaBase, schema_url
from runyard.api.errors import problem_responses
from runyard.api.params import RunIdPath
from runyard.api.sse import (
    KEEPALIVE,
    KEEPALIVE_SECONDS,
    SSE_HEADERS,
    Closed,
    detach,
    event,
    first_of,
)
from runyard.app import Runyard
from runyard.domain.models import Run
from runyard.exceptions import NotFound
from runyard.store.logs import LogLine, count_lines, iter_raw_text, read_lines

router = APIRouter(tags=["logs"], responses=problem_responses(400, 401, 404, 422, 500))

_REPLAY_BATCH = 1000  # lines read from the file per thread hop while replaying
_END_WAIT = 24 * 3600.0  # wait_for_end wants a bound; a log stream may follow a long run
_GAP_WAIT = 2.0  # how long lines missing from the file may take to be flushed to it
_GAP_POLL = 0.05
_RECHECK_SECONDS = 0.2  # how often the file is read again right after subscribing


def _line_body(line: LogLine) -> schemas.LogLine:
    return schemas.LogLine(n=line.n, at=line.at, stream=line.stream, text=line.text)


@router.get("/api/runs/{runId}/log", summary="Get a page of a run's log")
async def get_log(
    run_id: RunIdPath,
    runyard: RunyardDep,
    base: SchemaBase,
    start: Annotated[int, Query(alias="from", description="First line number", ge=0)] = 0,
    limit: Annotated[int, Query(description="Max lines", ge=1, le=10_000)] = 1000,
) -> schemas.LogPage:
    """Return up to `limit` lines numbered from `from`; `next` continues after them."""
    # Read the run first: once it is seen ended, its log file is complete.
    run = await runyard.get_run(run_id)
    path = runyard.log_path(run.id)
    lines = await asyncio.to_thread(read_lines, path, start, limit)
    total = await asyncio.to_thread(count_lines, path)
    return schemas.LogPage(
        schema_=schema_url(base, "LogPage"),
        run_id=run.id,
        lines=[_line_body(line) for line in lines],
        next=lines[-1].n + 1 if lines else start,
        total_lines=total,
        finished=not run.is_active,
    )


@router.get(
    "/api/runs/{runId}/log/raw",
    summary="Get a run's log as plain text",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def get_raw_log(run_id: RunIdPath, runyard: RunyardDep) -> StreamingResponse:
    """Stream the log's lines (stdout and stderr interleaved) as text, never loading it whole."""
    run = await runyard.get_run(run_id)
    return StreamingResponse(iter_raw_text(runyard.log_path(run.id)), media_type="text/plain")


@router.get(
    "/api/runs/{runId}/log/stream",
    summary="Follow a run's log (SSE)",
    response_class=StreamingResponse,
    responses={200: {"content": schemas.LOG_STREAM_CONTENT}},
)
async def stream_log(
    run_id: RunIdPath,
    runyard: RunyardDep,
    closing: ClosingDep,
    base: SchemaBase,
    start: Annotated[int, Query(alias="from", description="First line number", ge=0)] = 0,
    last_event_id: Annotated[
        NonNegativeInt | SkipJsonSchema[None],
        Header(alias="Last-Event-ID", description="Resume after this line number"),
    ] = None,
) -> StreamingResponse:
    """Send each log line as an `event: line` (id = line number), then `event: done`.

    Lines already written are replayed from the file, then live lines follow.
    `done` carries the ended run; the stream closes after it.
    """
    run = await runyard.get_run(run_id)  # a 404 must be answered before streaming starts
    first = last_event_id + 1 if last_event_id is not None else start
    return StreamingResponse(
        follow_log(runyard, run, first, closing, base),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


class _Cursor:
    """The next line number the client has not been sent."""

    def __init__(self, path: Path, start: int) -> None:
        self.path = path
        self.next = start

    def take(self, lines: list[LogLine]) -> list[str]:
        out = []
        for line in lines:
            if line.n >= self.next:  # lines seen both in the file and live go out once
                out.append(event("line", _line_json(line), line.n))
                self.next = line.n + 1
        return out

    async def replay(self) -> AsyncIterator[str]:
        while True:
            lines = await asyncio.to_thread(read_lines, self.path, self.next, _REPLAY_BATCH)
            for item in self.take(lines):
                yield item
            if len(lines) < _REPLAY_BATCH:
                return


def _line_json(line: LogLine) -> dict[str, Any]:
    return _line_body(line).model_dump(mode="json")


async def _end_of(runyard: Runyard, run_id: str) -> Run | None:
    """Return the run once ended; None when it vanished (deleted by retention)."""
    try:
        return await runyard.wait_for_end(run_id, _END_WAIT)
    except NotFound:
        return None


async def _fill_gap(
    cursor: _Cursor, up_to: int, ended_task: asyncio.Future[Run | None], closing: Closing
) -> AsyncIterator[str]:
    """Replay lines below `up_to` that went to the file before we subscribed.

    The writer batches records and flushes within ~0.1 s, so such lines can
    be missing from the file for a moment: poll it briefly. A gap that stays
    is output the log dropped (drop_old), and is left as it is.
    """
    deadline = asyncio.get_running_loop().time() + _GAP_WAIT
    while True:
        async for item in cursor.replay():
            yield item
        if cursor.next >= up_to or asyncio.get_running_loop().time() >= deadline:
            return
        if await first_of({"ended": ended_task}, closing, _GAP_POLL) is not None:
            return  # the run ended: the caller replays the complete file


async def follow_log(
    runyard: Runyard, run: Run, start: int, closing: Closing, base: str
) -> AsyncIterator[str]:
    followers = runyard.engine.followers
    # Subscribe before replaying the file: a line written in between is then in
    # the queue if it is not in the file, and the cursor drops the duplicates.
    queue = followers.subscribe(run.id)
    # Every way a run ends (even stopped while queued, with no process) resolves this.
    ended_task = asyncio.ensure_future(_end_of(runyard, run.id))
    cursor = _Cursor(runyard.log_path(run.id), start)
    loop = asyncio.get_running_loop()
    # Lines written just before we subscribed may still sit in the log writer's
    # buffer, in neither the file nor our queue: look at the file again while
    # the writer's flush delay lasts, even if no newer line comes to show a gap.
    recheck_until = loop.time() + _GAP_WAIT
    try:
        async for item in cursor.replay():
            yield item
        while True:
            rechecking = loop.time() < recheck_until
            # Lines first: when both are ready, no line is lost.
            waits: dict[str, Any] = {"line": queue.get(), "ended": ended_task}
            outcome = await first_of(
                waits, closing, _RECHECK_SECONDS if rechecking else KEEPALIVE_SECONDS
            )
            if outcome is None:
                if rechecking:
                    async for item in cursor.replay():
                        yield item
                else:
                    yield KEEPALIVE
                continue
            key, chunk = outcome
            if key == "ended":
                break
            if chunk is None:
                # Output over, or we fell too far behind and were dropped: follow
                # anew and catch up from the file. After a real end, only the
                # end itself comes next.
                followers.unsubscribe(run.id, queue)
                queue = followers.subscribe(run.id)
                async for item in cursor.replay():
                    yield item
                continue
            if chunk.first_line > cursor.next:
                async for item in _fill_gap(cursor, chunk.first_line, ended_task, closing):
                    yield item
            for item in cursor.take(chunk.lines()):
                yield item
        # The end is recorded after the log file is closed: the file now holds every line.
        async for item in cursor.replay():
            yield item
        final = ended_task.result() or await runyard.get_run(run.id)
        yield event("done", schemas.run_json(final, base))
    except (Closed, NotFound):
        return  # shutting down, or the run was deleted while followed
    finally:
        # No await here: this also runs while the stream is being cancelled.
        followers.unsubscribe(run.id, queue)
        detach(ended_task)
