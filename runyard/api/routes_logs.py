"""Run logs: JSON pages, raw text, and a live SSE stream that resumes by line number."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import NonNegativeInt
from pydantic.json_schema import SkipJsonSchema

from runyard.api import bodies, schemas
from runyard.api.deps import Closing, ClosingDep, RunyardDep, SchemaBase, schema_url
from runyard.api.errors import problem_responses
from runyard.api.node_proxy import log_elsewhere
from runyard.api.params import RunIdPath
from runyard.api.sse import KEEPALIVE, KEEPALIVE_SECONDS, LOG_STREAM_CONTENT, SSE_HEADERS, event
from runyard.app import Runyard
from runyard.domain.models import Run
from runyard.store.logs import LogLine, count_lines, iter_raw_text, read_lines

# 503: the run's log is on another node's disk and that node cannot be reached.
router = APIRouter(tags=["logs"], responses=problem_responses(400, 401, 404, 422, 500, 503))


def _line_body(line: LogLine) -> schemas.LogLine:
    return schemas.LogLine(n=line.n, at=line.at, stream=line.stream, text=line.text)


@router.get(
    "/api/runs/{runId}/log", summary="Get a page of a run's log", response_model=schemas.LogPage
)
async def get_log(
    request: Request,
    run_id: RunIdPath,
    runyard: RunyardDep,
    base: SchemaBase,
    start: Annotated[int, Query(alias="from", description="First line number", ge=0)] = 0,
    limit: Annotated[int, Query(description="Max lines", ge=1, le=10_000)] = 1000,
) -> schemas.LogPage | Response:
    """Return up to `limit` lines numbered from `from`; `next` continues after them."""
    # Read the run first: once it is seen ended, its log file is complete.
    run = await runyard.get_run(run_id)
    if (elsewhere := await log_elsewhere(request, runyard, run)) is not None:
        return elsewhere
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
async def get_raw_log(request: Request, run_id: RunIdPath, runyard: RunyardDep) -> Response:
    """Stream the log's lines (stdout and stderr interleaved) as text, never loading it whole."""
    run = await runyard.get_run(run_id)
    if (elsewhere := await log_elsewhere(request, runyard, run)) is not None:
        return elsewhere
    return StreamingResponse(iter_raw_text(runyard.log_path(run.id)), media_type="text/plain")


@router.get(
    "/api/runs/{runId}/log/stream",
    summary="Follow a run's log (SSE)",
    response_class=StreamingResponse,
    responses={200: {"content": LOG_STREAM_CONTENT}},
)
async def stream_log(
    request: Request,
    run_id: RunIdPath,
    runyard: RunyardDep,
    closing: ClosingDep,
    base: SchemaBase,
    start: Annotated[int, Query(alias="from", description="First line number", ge=0)] = 0,
    last_event_id: Annotated[
        NonNegativeInt | SkipJsonSchema[None],
        Header(alias="Last-Event-ID", description="Resume after this line number"),
    ] = None,
) -> Response:
    """Send each log line as an `event: line` (id = line number), then `event: done`.

    Lines already written are replayed from the file, then live lines follow.
    `done` carries the ended run; the stream closes after it.
    """
    run = await runyard.get_run(run_id)  # a 404 must be answered before streaming starts
    elsewhere = await log_elsewhere(request, runyard, run, live=True, closing=closing)
    if elsewhere is not None:
        return elsewhere
    first = last_event_id + 1 if last_event_id is not None else start
    return StreamingResponse(
        follow_log(runyard, run, first, closing, base),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def follow_log(
    runyard: Runyard, run: Run, start: int, closing: Closing, base: str
) -> AsyncIterator[str]:
    """Frame what the engine's log follow yields as SSE: lines, keepalives, then `done`."""
    async with aclosing(runyard.follow_log(run, start, closing, KEEPALIVE_SECONDS)) as items:
        async for item in items:
            if item is None:
                yield KEEPALIVE
            elif isinstance(item, Run):
                yield event("done", bodies.run_json(item, base))
            else:
                yield event("line", _line_json(item), item.n)


def _line_json(line: LogLine) -> dict[str, Any]:
    return _line_body(line).model_dump(mode="json")
