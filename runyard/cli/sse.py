"""A minimal server-sent events parser: text lines in, events out.

Only what the daemon's streams use: `event`, `data` (joined with newlines when
repeated), `id` and comment lines (keepalives). `retry` is ignored because the
CLI decides itself when to reconnect.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event."""

    event: str
    data: str
    id: str | None = None


def parse_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Yield each event of an SSE stream given as lines without their line endings."""
    kind = ""
    data: list[str] = []
    event_id: str | None = None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            # A blank line dispatches; a block holding only an id or comments dispatches nothing.
            if data:
                yield ServerSentEvent(kind or "message", "\n".join(data), event_id)
            kind, data = "", []
            continue
        if line.startswith(":"):
            continue  # a comment: the daemon's keepalive
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            event_id = value
    # A stream cut mid-event leaves the last one undispatched, as the SSE spec says.
