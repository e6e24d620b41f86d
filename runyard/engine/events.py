"""The run event feed behind GET /api/events (created, started, ended), and its listeners.

Listeners (the notification service) hear every run event and the signals
that are not run events (a trigger refused for a full disk, an exhausted
allowance); they are called inline, so each must be quick and never raise.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_REPLAY = 1000  # events kept for clients resuming with Last-Event-ID
_MAX_PENDING = 10_000  # a subscriber this far behind is dropped (it can resume)

log = logging.getLogger("runyard.engine")

Listener = Callable[[str, dict[str, Any]], None]


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
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Call `listener(kind, data)` for every event and signal from now on."""
        self._listeners.append(listener)

    def signal(self, kind: str, data: dict[str, Any]) -> None:
        """Tell the listeners (not the /api/events subscribers) about something not a run event."""
        self._tell_listeners(kind, data)

    def _tell_listeners(self, kind: str, data: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(kind, data)
            except Exception:  # noqa: BLE001 - a listener's bug must not fail a run's end
                log.exception("an event listener failed on %s", kind)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        if self._listeners:
            self._tell_listeners(kind, data)
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
