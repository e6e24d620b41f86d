"""Server-sent events: the wire format (events, keepalives, headers) and its OpenAPI description.

Waiting for the next event while giving way to keepalives and shutdown is
engine/waiting.py's.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from runyard.api import schemas
from runyard.domain.models import EndReason, RunStatus, TriggeredBy

KEEPALIVE_SECONDS = 15.0
KEEPALIVE = ": keepalive\n\n"
SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # Reverse proxies (nginx) buffer responses unless told not to; events must flow at once.
    "X-Accel-Buffering": "no",
}


def event(kind: str, data: Any, event_id: int | str | None = None) -> str:
    """Return one SSE event; `data` is sent as compact JSON on a single line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"{head}event: {kind}\ndata: {payload}\n\n"


def _sse_event(kinds: list[str], data_schema: dict[str, Any], *, numbered: bool) -> dict[str, Any]:
    """Return the schema of one server-sent event: its kind, id and JSON data."""
    properties: dict[str, Any] = {
        "event": {"enum": kinds},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": data_schema,
        },
        # A client keeps the last id it saw; an event without one repeats it.
        "id": {"type": "string", "pattern": "^[0-9]+$"},
    }
    required = ["event", "data", "id"] if numbered else ["event", "data"]
    return {"type": "object", "properties": properties, "required": required}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


# The events of `GET /api/runs/{runId}/log/stream`: a `line` per log line
# (id = its number), then `done` with the ended run.
LOG_STREAM_CONTENT: dict[str, Any] = {
    "text/event-stream": {
        "schema": {
            "description": "One event per log line, then `done` with the ended run",
            "anyOf": [
                _sse_event(["line"], _ref(schemas.LogLine), numbered=True),
                _sse_event(["done"], _ref(schemas.Run), numbered=False),
            ],
        }
    }
}

_EVENT_DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "task_name": {"type": "string"},
        "status": {"enum": [status.value for status in RunStatus]},
        "end_reason": {"enum": [*(reason.value for reason in EndReason), None]},
        "exit_code": {"type": "integer"},
        # `service`: the run is a lifetime of a service's instance (task_name: the service).
        "triggered_by": {"enum": [trigger.value for trigger in TriggeredBy]},
    },
    "required": ["id", "task_name", "status", "end_reason", "exit_code", "triggered_by"],
}

# The events of `GET /api/events`, numbered in the order they happened.
EVENT_STREAM_CONTENT: dict[str, Any] = {
    "text/event-stream": {
        "schema": _sse_event(
            ["run.created", "run.started", "run.ended"], _EVENT_DATA_SCHEMA, numbered=True
        )
    }
}
