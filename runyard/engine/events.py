"""The run event feed behind GET /api/events: created, started, ended."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

_REPLAY = 1000  # events kept for clients resuming with Last-Event-ID
_MAX_PENDING = 10_000  # a subscriber this far behind is dropped (it can resume)


@dataclass(frozen=True)
class Event:
    id: int
    kind: str  # run.created | run.started | run.ended
    data: dict[str, Any]


class EventHub:
    """Fan out run events to SSE subscribers, with monotonic ids and a replay buffer."""

    def __init__(self) -> None:
        self._next_id = 1
        self._recent: deque[Event] = deque(maxlen=_REPLAY)
        self._subscribers: set[asyncio.Queue[Event | None]] = set()

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        event = Event(self._next_id, kind, data)
        self._next_id += 1
        self._recent.append(event)
        for queue in list(self._subscribers):
            if queue.qsize() >= _MAX_PENDING:
                self._subscribers.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)

    def subscribe(self, after: int | None = None) -> asyncio.Queue[Event | None]:
        """Return a queue of events after id `after` (replayed from the buffer), then live."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        if after is not None:
            for event in self._recent:
                if event.id > after:
                    queue.put_nowait(event)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event | None]) -> None:
        self._subscribers.discard(queue)

    def close(self) -> None:
        for queue in self._subscribers:
            queue.put_nowait(None)
        self._subscribers.clear()
