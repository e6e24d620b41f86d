"""Talk to a running daemon over HTTP; every failure becomes a one-line CliError.

Built on the standard library's `http.client`: every CLI command starts a new
interpreter, and an HTTP client library costs more to import (about 0.1 s
here) than a command against a local daemon takes in all. The daemon speaks
plain HTTP/1.1 with JSON bodies and server-sent events; nothing more is needed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from runyard.cli.sse import ServerSentEvent, parse_events

# Most answers are quick; waits and streams pass their own read timeout.
CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
# The daemon sends a keepalive every 15 s, so silence this long means a dead link.
STREAM_READ_TIMEOUT = 45.0
_CHUNK = 64 * 1024


class CliError(Exception):
    """A failure to report as one line on stderr (without a traceback), then exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        self.message = message
        self.exit_code = exit_code
        super().__init__(message)


class DaemonProblem(CliError):
    """The daemon answered with an error status; `body` is its problem document, if any."""

    def __init__(self, message: str, status: int, body: object) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class DaemonUnreachable(CliError):
    """No daemon answered at the URL: nothing was sent, so a caller may fall back safely."""


class StreamInterrupted(CliError):
    """An event stream ended or stalled before its last event; the caller may resume it."""


def describe_problem(status: int, body: object, reason: str) -> str:
    """Return `<detail> (<location>: <message>; ...)` for a problem+json answer."""
    if not isinstance(body, dict):
        return f"the daemon answered {status} {reason}"
    detail = str(body.get("detail") or body.get("title") or f"{status} {reason}")
    errors = body.get("errors")
    parts = []
    if isinstance(errors, list):
        for error in errors:
            if isinstance(error, dict) and error.get("message"):
                location = error.get("location")
                message = str(error["message"])
                parts.append(f"{location}: {message}" if location else message)
    # The daemon's detail often repeats its errors; show each fact once.
    if parts and not all(part.replace(": ", " ", 1) in detail for part in parts):
        return f"{detail} ({'; '.join(parts)})"
    return detail


class DaemonClient:
    """The daemon's REST API, with the token attached and errors translated."""

    def __init__(
        self,
        url: str,
        token: str | None,
        token_source: str,
        *,
        url_source: str = "",
    ) -> None:
        """`token_source` and `url_source` say how they were found, for error messages."""
        self.url = url.rstrip("/")
        self.token = token
        self.token_source = token_source
        self.url_source = url_source
        try:
            parts = urlsplit(self.url)
            port = parts.port
        except ValueError as exc:
            raise CliError(f"invalid daemon URL {url!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"invalid daemon URL {url!r}: expected http://HOST:PORT")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: each request has a connection of its own."""

    # ----- plain requests ------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET `path` and return its JSON body."""
        return self.request("GET", path, params=params)[1]

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: object = None,
        read_timeout: float | None = None,
    ) -> tuple[int, Any]:
        """Send a request and return (status, JSON body); raise CliError on any failure."""
        payload = None if body is None else json.dumps(body).encode("utf-8")
        with self._response(method, path, params, payload, read_timeout) as response:
            raw = self._translated(response.read)
        try:
            return response.status, json.loads(raw or b"null")
        except ValueError:
            raise CliError(f"the daemon at {self.url} answered {path} with non-JSON") from None

    # ----- streams ---------------------------------------------------------------

    def events(
        self,
        path: str,
        last_event_id: str | None = None,
        read_timeout: float = STREAM_READ_TIMEOUT,
    ) -> Iterator[ServerSentEvent]:
        """Yield the events of an SSE endpoint; raise StreamInterrupted when the link drops."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        with self._response("GET", path, None, None, read_timeout, headers) as response:
            try:
                yield from parse_events(_lines(response))
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                raise StreamInterrupted(
                    f"lost the stream from {self.url}{path}: {exc or type(exc).__name__}"
                ) from None
        raise StreamInterrupted(f"the stream from {self.url}{path} ended early")

    def raw_chunks(self, path: str) -> Iterator[bytes]:
        """Yield the body of `path` as it arrives, without decoding it."""
        with self._response("GET", path, None, None, STREAM_READ_TIMEOUT) as response:
            while chunk := self._translated(lambda: response.read1(_CHUNK)):
                yield chunk

    # ----- the connection ------------------------------------------------------------

    @contextlib.contextmanager
    def _response(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        payload: bytes | None,
        read_timeout: float | None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Iterator[http.client.HTTPResponse]:
        headers = {**self._headers, **(extra_headers or {})}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        target = self._prefix + path
        query = _query(params)
        if query:
            target += "?" + query
        # A connection per request: a kept-alive one the daemon closed while the
        # CLI polled would fail a request that may or may not have been handled.
        connection = self._connect()
        try:
            try:
                connection.request(method, target, body=payload, headers=headers)
                if connection.sock is not None:
                    connection.sock.settimeout(read_timeout or DEFAULT_READ_TIMEOUT)
                response = connection.getresponse()
            except TimeoutError:
                raise CliError(f"the daemon at {self.url} did not answer in time") from None
            except (OSError, http.client.HTTPException) as exc:
                raise CliError(f"the request to the daemon at {self.url} failed: {exc}") from None
            self._raise_for_status(response)
            yield response
        finally:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        factory = (
            http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        )
        connection = factory(self._host, self._port, timeout=CONNECT_TIMEOUT)
        try:
            connection.connect()
        except OSError as exc:
            where = f" (from {self.url_source})" if self.url_source else ""
            if isinstance(exc, socket.gaierror):
                where += f": {exc.strerror}"
            raise DaemonUnreachable(
                f"cannot reach the daemon at {self.url}{where}: is `runyard serve` running?"
            ) from None
        return connection

    def _translated(self, read: Callable[[], bytes]) -> bytes:
        try:
            return read()
        except TimeoutError:
            raise CliError(f"the daemon at {self.url} stopped sending") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(f"the answer from the daemon at {self.url} broke off: {exc}") from None

    def _raise_for_status(self, response: http.client.HTTPResponse) -> None:
        status = response.status
        if status < 400:
            return
        raw = response.read()
        if status == 401:
            if self.token is None:
                raise CliError(f"the daemon at {self.url} needs a token, but {self.token_source}")
            raise CliError(f"the daemon at {self.url} refused {self.token_source}")
        try:
            body: object = json.loads(raw)
        except ValueError:
            body = None
        raise DaemonProblem(describe_problem(status, body, response.reason), status, body)


def _lines(response: http.client.HTTPResponse) -> Iterator[str]:
    while line := response.readline():
        yield line.decode("utf-8", errors="replace")


def _query(params: Mapping[str, Any] | None) -> str:
    """Drop unset parameters and spell booleans the way the API reads them."""
    if not params:
        return ""
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return urlencode(out)
