"""The run event feed (SSE): run.created, run.started, run.ended, resumable by id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse
from pydantic import NonNegativeInt
from pydantic.json_schema import SkipJsonSchema

from runyard.api.deps import Closing, ClosingDep, RunyardDep
from runyard.api.errors import problem_responses
from runyard.api.sse import EVENT_STREAM_CONTENT, KEEPALIVE, KEEPALIVE_SECONDS, SSE_HEADERS, event
from runyard.engine.events import EventHub
from runyard.engine.waiting import Closed, first_of

router = APIRouter(tags=["events"], responses=problem_responses(400, 401, 422, 500))


@router.get(
    "/api/events",
    summary="Follow run events (SSE)",
    response_class=StreamingResponse,
    responses={200: {"content": EVENT_STREAM_CONTENT}},
)
async def stream_events(
    runyard: RunyardDep,
    closing: ClosingDep,
    last_event_id: Annotated[
        NonNegativeInt | SkipJsonSchema[None],
        Header(alias="Last-Event-ID", description="Replay the events after this id"),
    ] = None,
) -> StreamingResponse:
    """Send each run event as `id: <n>`, `event: <kind>`, `data: <json>`.

    With Last-Event-ID the recent events after that id are replayed first.
    The stream ends when the daemon shuts down (or drops a client that fell
    too far behind); clients reconnect with the last id they saw.
    """
    return StreamingResponse(
        event_lines(runyard.engine.events, last_event_id, closing),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def event_lines(hub: EventHub, after: int | None, closing: Closing) -> AsyncIterator[str]:
    queue = hub.subscribe(after=after)
    try:
        while True:
            try:
                outcome = await first_of({"event": queue.get()}, closing, KEEPALIVE_SECONDS)
            except Closed:
                return
            if outcome is None:
                yield KEEPALIVE
                continue
            item = outcome[1]
            if item is None:
                return
            yield event(item.kind, item.data, item.id)
    finally:
        hub.unsubscribe(queue)
