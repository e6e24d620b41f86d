"""Server-sent events: the wire format (events, keepalives, headers).

Waiting for the next event while giving way to keepalives and shutdown is
engine/waiting.py's.
"""

from __future__ import annotations

import json
from typing import Any

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
