"""A cap on request bodies, answered with 413 before a handler reads them."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.api.errors import problem
from runyard.api.routes_v3 import error_response

V3_PREFIX = "/api/v3/"


def too_large_message(limit: int) -> str:
    """Return the 413 message for a body over `limit` bytes."""
    return f"The request body is larger than the {_size(limit)} limit ([daemon] max_request_size)."


def _size(limit: int) -> str:
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


class BodyLimit:
    """Refuse request bodies over the limit with 413, in the error format of the route.

    A declared Content-Length over the limit is refused before anything is
    read. A body without one (chunked) is read here up to the limit and then
    replayed to the app, so no handler ever holds more than the limit.
    """

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = _content_length(scope)
        if declared is not None:
            if declared > limit:
                await self._refuse(scope, receive, send, limit)
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await self._refuse(scope, receive, send, limit)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        message = too_large_message(limit)
        request = Request(scope)
        if scope.get("path", "").startswith(V3_PREFIX):
            response = error_response(413, message)
        else:
            response = problem(str(request.base_url), 413, message, request.url.path)
        # Close the connection: the rest of the body is not read.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
