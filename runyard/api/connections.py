"""Connections a client cannot hold hostage: header and body deadlines, a cap on open ones.

uvicorn closes idle keep-alive connections, but has no deadline for a request
that is being sent: a client that sends its headers a byte at a time, or a
body it never finishes, holds a connection (a file descriptor, a little memory)
for as long as it likes, and enough of them exhaust the daemon. This protocol
is uvicorn's own (httptools) with deadlines added:

- the request line and headers must arrive within `header_timeout` of the
  connection opening, or of the previous answer on a keep-alive connection;
- a body gets `body_timeout`, extended by one second per MIN_BODY_RATE bytes
  received, so a slow but honest upload finishes and a trickle does not;
- at most `max_connections` are open. A new connection over the cap closes
  the connection that has waited longest on its client (idle, or still sending
  its request), so an attacker holding every slot cannot lock out `/health`;
  connections whose request is being answered are never dropped.

Deadlines are checked by one sweep a second rather than a timer per request:
the answer path (the hot one) only stores a number.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("runyard.http")

# A body must average at least this once its body_timeout is used up: far
# below any real link (80 kbit/s), far above a trickle meant to hold the socket.
MIN_BODY_RATE = 10 * 1024  # bytes per second
SWEEP_SECONDS = 1.0
# How often the counts of closed connections are logged (one line, not one per connection).
REPORT_SECONDS = 60.0
# Descriptors kept for everything but client connections: the database, run
# pipes and log files (128), and the connections asyncio accepts in one go
# (up to the listen backlog) before the cap can close any, three times over:
# the connections a burst displaces release their descriptors only in a later
# loop iteration, and under a sustained flood of connections two bursts'
# worth was seen not to be enough (EMFILE in asyncio's accept loop).
ACCEPT_BURST = 128
RESERVED_DESCRIPTORS = 128 + 3 * ACCEPT_BURST

# How long a connection answered before its body arrived keeps reading (and
# discarding) the rest before it closes. Closing with unread data makes the
# kernel reset the connection, and the client may lose the answer (a 413 or
# 429 telling it why) to that reset.
LINGER_SECONDS = 2.0

_NO_DEADLINE = math.inf


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float  # seconds
    body_timeout: float  # seconds
    min_body_rate: float = MIN_BODY_RATE


def descriptor_budget(wanted: int) -> int:
    """Raise this process's open-file limit as far as allowed; return the connections it fits.

    Python keeps the soft limit it was started with (often 1024) although the
    hard limit is usually far higher.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    # Under a small limit, keep half for the rest rather than nothing for clients.
    reserved = min(RESERVED_DESCRIPTORS, soft // 2)
    return max(1, min(wanted, soft - reserved))


class ConnectionGuard:
    """What every connection of one server shares: limits, order of waiting, counts."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        # Connections waiting on their client (idle, or sending a request),
        # oldest first: a dict keeps insertion order and removes in O(1).
        self.waiting: dict[GuardedHttpProtocol, None] = {}
        self.too_slow = 0
        self.dropped_for_room = 0
        self.refused = 0
        self._reported_at: float | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def protocol_class(self) -> type[GuardedHttpProtocol]:
        """Return the protocol class to hand uvicorn (`Config(http=...)`)."""
        guard = self

        class Protocol(GuardedHttpProtocol):
            pass

        Protocol.guard = guard
        return Protocol

    def start(self) -> None:
        """Start the sweep on the running loop."""
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def make_room(self, newcomer: GuardedHttpProtocol) -> bool:
        """Close the connection that has waited longest on its client; False if none can go."""
        for connection in self.waiting:
            if connection is not newcomer:
                self.dropped_for_room += 1
                connection.close_by_runyard()
                return True
        return False

    def sweep(self, now: float) -> None:
        """Close every connection past its deadline."""
        late = [
            connection
            for connection in self.waiting
            if connection.deadline <= now and not connection.postponed(now)
        ]
        for connection in late:
            self.too_slow += 1
            connection.close_by_runyard()
        self._report(now)

    def _report(self, now: float) -> None:
        if self._reported_at is None:
            self._reported_at = now
            return
        if now - self._reported_at < REPORT_SECONDS:
            return
        self._reported_at = now
        if self.too_slow or self.dropped_for_room or self.refused:
            log.warning(
                "closed connections in the last %d s: %d too slow sending their request "
                "(header_timeout %gs, body_timeout %gs), %d to make room and %d refused "
                "(max_connections %d)",
                REPORT_SECONDS,
                self.too_slow,
                self.limits.header_timeout,
                self.limits.body_timeout,
                self.dropped_for_room,
                self.refused,
                self.limits.max_connections,
                extra={
                    "too_slow": self.too_slow,
                    "dropped_for_room": self.dropped_for_room,
                    "refused": self.refused,
                },
            )
            self.too_slow = self.dropped_for_room = self.refused = 0

    async def _sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep(loop.time())


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with the deadlines and the cap of a ConnectionGuard."""

    guard: ConnectionGuard

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.deadline = _NO_DEADLINE
        self._body_started = 0.0
        self._body_received = 0
        self._reading_body = False
        self._closed_by_runyard = False
        self.lingering = False
        self._answer_transport = _AnswerTransport(self)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        if len(self.connections) > guard.limits.max_connections and not guard.make_room(self):
            guard.refused += 1
            self.close_by_runyard()
            return
        self._wait_for_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.waiting.pop(self, None)
        if self._reading_body and not self._closed_by_runyard and self.scope is not None:
            # The scope's client: the address a trusted proxy forwarded for, if any.
            peer = self.scope.get("client") or self.client
            client = peer[0] if peer else "an unknown address"
            # No port: the same client's next disconnect is the same line, which
            # the log then rate-limits.
            log.info(
                "a client at %s closed its connection before sending the whole body of %s %s",
                client,
                self.scope.get("method", "?"),
                self.scope.get("path", "?"),
                extra={"client": client},
            )
        self._reading_body = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # the rest of a body already answered
        super().data_received(data)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.cycle is not None:
            # Only until the body has arrived (on_message_complete): then the
            # answer goes straight to the socket again.
            self.cycle.transport = self._answer_transport
        now = self.loop.time()
        self._body_started = now
        self._body_received = 0
        self._reading_body = True
        self.deadline = now + self.guard.limits.body_timeout

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_received += len(body)
        limits = self.guard.limits
        self.deadline = (
            self._body_started + limits.body_timeout + self._body_received / limits.min_body_rate
        )

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None:
            self.cycle.transport = self.transport
        self._reading_body = False
        self.deadline = _NO_DEADLINE
        self.guard.waiting.pop(self, None)

    def on_response_complete(self) -> None:
        # Answered: whatever the client does now, it is not leaving mid-request.
        self._reading_body = False
        super().on_response_complete()
        if self.transport.is_closing() or self.lingering:
            return
        if self.cycle is None or self.cycle.response_complete:
            # Not when a pipelined request is being answered next: that one is
            # runyard's to finish, not the client's.
            self._wait_for_request()

    def postponed(self, now: float) -> bool:
        """Push the deadline back if runyard, not the client, stopped the upload (flow control)."""
        if self._reading_body and self.flow is not None and self.flow.read_paused:
            self.deadline = now + self.guard.limits.body_timeout
            return True
        return False

    def close_after_answer(self) -> None:
        """Close once answered; if the body is still coming, read and drop it for a while first."""
        if (
            not self._reading_body
            or self.transport.is_closing()
            or not self.transport.can_write_eof()
        ):
            self.transport.close()
            return
        self.lingering = True
        self.guard.waiting.pop(self, None)
        self.transport.write_eof()  # after the answer: the client reads it, then end of file
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self._end_linger)

    def _end_linger(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def close_by_runyard(self) -> None:
        """Close at once (no answer: the request is incomplete), freeing the descriptor now."""
        self._closed_by_runyard = True
        self.guard.waiting.pop(self, None)
        self.transport.abort()

    def _wait_for_request(self) -> None:
        self.deadline = self.loop.time() + self.guard.limits.header_timeout
        waiting = self.guard.waiting
        waiting.pop(self, None)
        waiting[self] = None  # newest last


class _AnswerTransport(asyncio.Transport):
    """The transport a request's answer is written to: closing it may linger (see LINGER_SECONDS).

    uvicorn closes the connection right after an answer that says
    `Connection: close`, also when the request's body is still arriving.
    """

    def __init__(self, protocol: GuardedHttpProtocol) -> None:
        super().__init__()
        self._protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._protocol.transport.is_closing()

    def close(self) -> None:
        self._protocol.close_after_answer()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._protocol.transport.get_extra_info(name, default)
