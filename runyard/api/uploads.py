"""Request bodies read before the app sees them, so a client without credentials stays cheap.

- An address over its limit of invalid v3 keys is answered 429 before its
  body is read.
- An address may send at most `max_uploads_per_client` large bodies at once.
- A v3 body of some size is checked for its key before anything parses it:
  when `"key"` is its first or last member, a wrong key is answered 401 at
  the cost of a regular expression, not of parsing megabytes of data.
- A client that goes away mid-body ends the request here, quietly: the app
  never sees half a body (the connection layer logs one line for it).

A trigger body (v3 `/trigger`, REST `/api/tasks/<name>/run`) from
STAGE_FROM bytes is parsed by a worker process (`runyard/body_parser.py`),
which writes its input data to the run's input files; the app gets the body
without its `data` member, and the staged input in the scope. A body whose
run is not recorded (any answer but 2xx) has its input files deleted.

Every invalid v3 key counts against its address: one call, plus one per MiB
of body it came with, so a flood of large bodies is cut off sooner than a
client retrying a small one.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from ulid import ULID

from runyard.api.auth import carries_token
from runyard.api.errors import invalid_json_problem, problem
from runyard.api.routes_v3 import BODY_OBJECT, error_response, json_problem_message
from runyard.body_parser import STAGE_FROM, STAGED_INPUT_KEY, BodyParser, JsonProblem, StagedInput
from runyard.v3.messages import INVALID_KEY, RATE_LIMITED
from runyard.v3.service import V3Service

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
V3_TRIGGER = "/api/v3/trigger"
_REST_TRIGGER = re.compile(r"\A/api/tasks/[^/]+/run\Z")
# What a REST trigger body that is not a JSON object is replaced by: a value
# of the same JSON type, so FastAPI refuses it as it would have (without
# parsing megabytes on the event loop to say so).
_SAME_KIND = {"list": b"[]", "str": b'""', "int": b"0", "float": b"0.5", "bool": b"false"}

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
        self,
        app: ASGIApp,
        v3: Callable[[], V3Service],
        max_uploads: Callable[[], int],
        bodies: Callable[[], BodyParser] | None = None,
        token: str | None = None,
    ) -> None:
        self.app = app
        self.v3 = v3
        self.max_uploads = max_uploads
        self.bodies = bodies
        self.token = token  # REST bodies are parsed ahead only for callers that carry it
        self._uploads: defaultdict[str, int] = defaultdict(int)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        client = scope["client"][0] if scope.get("client") else "unknown"
        keyed_v3 = path.startswith(V3_PREFIX) and path not in _KEYLESS_V3
        v3 = self.v3()
        if keyed_v3:
            wait = v3.invalid_key_retry_after(client)
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
                if key is not None and not await v3.is_valid_key(key):
                    v3.count_invalid_key(client, invalid_key_weight(size))
                    await _refuse(scope, receive, send, 401, INVALID_KEY)
                    return
        finally:
            if large:
                self._release(client)
        if keyed_v3:
            send = _counting_invalid_keys(send, v3, client, invalid_key_weight(size))
        staged: StagedInput | None = None
        if self.bodies is not None and size >= STAGE_FROM and self._stages(scope, path):
            replaced = await self._stage(scope, receive, send, body)
            if replaced is None:
                return  # answered: the body is not a JSON object runyard can read
            body, staged = replaced
        if staged is None or not staged.wrote_file:
            await self.app(scope, _replay(body, receive), send)
            return
        recorded = False

        async def noting(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start":
                recorded = 200 <= message["status"] < 300
            await send(message)

        try:
            await self.app(scope, _replay(body, receive), noting)
        finally:
            if not recorded and self.bodies is not None:
                await asyncio.to_thread(self.bodies().discard, staged)

    def _stages(self, scope: Scope, path: str) -> bool:
        """Return whether the body goes to a worker: a trigger's, from a caller allowed to send it.

        A REST body without the daemon's token is left to BearerAuth, which
        refuses it unparsed; a v3 key is checked where the app always did.
        """
        if path == V3_TRIGGER:
            return True
        if _REST_TRIGGER.match(path) is None:
            return False
        return self.token is not None and carries_token(scope, self.token)

    async def _stage(
        self, scope: Scope, receive: Receive, send: Send, body: bytes
    ) -> tuple[bytes, StagedInput | None] | None:
        """Parse a large trigger body in a worker; return the body to replay and its staged input.

        Return None when the body was answered here (not a JSON object).
        """
        assert self.bodies is not None
        v3 = scope["path"] == V3_TRIGGER
        try:
            parsed = await self.bodies().parse(body, str(ULID()))
        except BrokenProcessPool:
            # A worker died (killed, out of memory); the next body gets new ones.
            message = "runyard could not read this body (its parser stopped); try again."
            await _refuse(scope, receive, send, 503, message, 1.0)
            return None
        if parsed.json_problem is not None:
            await _refuse_json(scope, receive, send, parsed.json_problem, v3)
            return None
        if not parsed.is_object:
            if v3:
                await _refuse(scope, receive, send, 400, BODY_OBJECT)
                return None
            return _SAME_KIND.get(parsed.kind, b"null"), None
        if parsed.staged is not None:
            scope[STAGED_INPUT_KEY] = parsed.staged
        # ensure_ascii: a lone surrogate in a member goes back as the same escape.
        return json.dumps(parsed.members).encode("ascii"), parsed.staged

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


async def _refuse_json(
    scope: Scope, receive: Receive, send: Send, json_problem: JsonProblem, v3: bool
) -> None:
    """Answer a body that is not JSON runyard can read, as the endpoint itself would."""
    if v3:
        await _refuse(scope, receive, send, 400, json_problem_message(json_problem))
        return
    if json_problem.kind != "syntax":
        # What the REST API answers when json.loads fails with other than a
        # JSONDecodeError (FastAPI's own 400).
        await _refuse(scope, receive, send, 400, "There was an error parsing the body")
        return
    await invalid_json_problem(Request(scope), json_problem.message)(scope, receive, send)


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


def _counting_invalid_keys(send: Send, v3: V3Service, client: str, weight: int) -> Send:
    # The v3 API's only 401 is "Invalid key" (its error table).
    async def counting(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 401:
            v3.count_invalid_key(client, weight)
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
