"""The optional access log: one line per HTTP request (logger `runyard.access`).

Only the path is logged, never the query string: the run viewer's links carry
their secret there, and event streams may carry the API token.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("runyard.access")


class AccessLog:
    """Log each request's client, method, path, status and duration once it is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            client = scope["client"][0] if scope.get("client") else "-"
            log.info(
                '%s "%s %s" %s %.2f ms',
                client,
                scope["method"],
                scope["path"],
                status or "-",
                duration_ms,
                extra={
                    "client": client,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status or None,
                    "duration_ms": duration_ms,
                },
            )
