"""Request bodies read before the app sees them, so a client without credentials stays cheap.

- An address over its limit of invalid v3 keys is answered 429 before its
  body is read.
- An address may send at most `max_uploads_per_client` large bodies at once.
- A v3 body of some size is checked for its key before anything parses it:
  when `"key"` is its first or last member, a wrong key is answered 401 at
  the cost of a regular expression, not of parsing megabytes of data.
- A client that goes away mid-body ends the request here, quietly: the app
  never sees half a body (the connection layer logs one line for it).

Every invalid v3 key counts against its address: one call, plus one per MiB
of body it came with, so a flood of large bodies is cut off sooner than a
client retrying a small one.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.api.errors import problem
from runyard.api.routes_v3 import error_response
from runyard.cloud import INVALID_KEY, RATE_LIMITED, CloudApi

V3_PREFIX = "/api/v3/"
# /stop carries no key; it has its own per-address limit.
_KEYLESS_V3 = frozenset({"/api/v3/stop"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# Bodies from this size count as uploads for the per-address cap.
LARGE_UPLOAD = 1024 * 1024
# v3 bodies from this size are checked for their key before they are parsed.
KEY_FIRST_FROM = 64 * 1024
# An invalid key counts one call, plus one per this many bytes of its body.
INVALID_KEY_BYTES_PER_CALL = 1024 * 1024
_PEEK_BYTES = 4096

# `{"key": "<string>"` at the start, or `, "key": "<string>"}` at the end. In
# valid JSON a quote after `{`, `,` or blanks opens a string, so either match
# is a member of the outermost object; a body that is not valid JSON may be
# refused for its key before it is refused for its syntax, which is fine.
_STRING = rb'"(?:[^"\\]|\\.)*"'
_KEY_FIRST = re.compile(rb'\A\s*\{\s*"key"\s*:\s*(' + _STRING + rb")")
_KEY_LAST = re.compile(rb'[{,]\s*"key"\s*:\s*(' + _STRING + rb")\s*\}\s*\Z")


def key_of(body: bytes) -> str | None:
    """Return the body's top-level `key` when it is the first or last member and a string."""
    match = _KEY_FIRST.match(body[:_PEEK_BYTES]) or _KEY_LAST.search(body[-_PEEK_BYTES:])
    if match is None:
        return None
    try:
        key = json.loads(match.group(1))
    except ValueError:
        return None
    return key if isinstance(key, str) else None


def invalid_key_weight(body_size: int) -> int:
    """Return how many calls an invalid key in a body of `body_size` bytes counts for."""
    return 1 + body_size // INVALID_KEY_BYTES_PER_CALL


class UploadGuard:
    """Read request bodies before the app, within the per-address limits."""

    def __init__(
        self, app: ASGIApp, cloud: Callable[[], CloudApi], max_uploads: Callable[[], int]
    ) -> None:
        self.app = app
        self.cloud = cloud
        self.max_uploads = max_uploads
        self._uploads: defaultdict[str, int] = defaultdict(int)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        client = scope["client"][0] if scope.get("client") else "unknown"
        keyed_v3 = path.startswith(V3_PREFIX) and path not in _KEYLESS_V3
        cloud = self.cloud()
        if keyed_v3:
            wait = cloud.invalid_key_retry_after(client)
            if wait > 0:
                await _refuse(scope, receive, send, 429, RATE_LIMITED, wait, close=True)
                return
        declared, chunked = _body_headers(scope)
        large = chunked or (declared is not None and declared >= LARGE_UPLOAD)
        if large:
            if self._uploads[client] >= self.max_uploads():
                message = (
                    RATE_LIMITED
                    if path.startswith(V3_PREFIX)
                    else f"Too many uploads at once from {client}: at most {self.max_uploads()} "
                    "bodies over 1 MiB at a time ([daemon] max_uploads_per_client)."
                )
                await _refuse(scope, receive, send, 429, message, 1.0, close=True)
                return
            self._uploads[client] += 1
        try:
            body = await _read_body(receive)
            if body is None:
                return  # the client went away mid-body: nobody to answer
            size = len(body)
            if keyed_v3 and size >= KEY_FIRST_FROM:
                key = key_of(body)
                if key is not None and not await cloud.is_valid_key(key):
                    cloud.count_invalid_key(client, invalid_key_weight(size))
                    await _refuse(scope, receive, send, 401, INVALID_KEY)
                    return
        finally:
            if large:
                self._release(client)
        if keyed_v3:
            send = _counting_invalid_keys(send, cloud, client, invalid_key_weight(size))
        await self.app(scope, _replay(body, receive), send)

    def _release(self, client: str) -> None:
        left = self._uploads[client] - 1
        if left > 0:
            self._uploads[client] = left
        else:
            del self._uploads[client]


async def _read_body(receive: Receive) -> bytes | None:
    """Return the whole body, or None if the client disconnected before its end."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            # After the body, the app only waits for the client to disconnect.
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _counting_invalid_keys(send: Send, cloud: CloudApi, client: str, weight: int) -> Send:
    # The v3 API's only 401 is "Invalid key" (its error table).
    async def counting(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 401:
            cloud.count_invalid_key(client, weight)
        await send(message)

    return counting


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    message: str,
    retry_after: float | None = None,
    *,
    close: bool = False,
) -> None:
    if scope["path"].startswith(V3_PREFIX):
        response = error_response(status, message, retry_after)
    else:
        request = Request(scope)
        response = problem(str(request.base_url), status, message, request.url.path)
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(retry_after)))
    if close:
        # The body is left unread: the connection cannot carry another request.
        response.headers["Connection"] = "close"
    await response(scope, receive, send)


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    """Return the declared Content-Length (None if absent or invalid) and whether it is chunked."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return length, chunked
