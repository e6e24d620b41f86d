"""Talk to a running daemon over HTTP; every failure becomes a one-line CliError."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from runyard.cli.sse import ServerSentEvent, parse_events

# Most answers are quick; waits and streams pass their own read timeout.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# The daemon sends a keepalive every 15 s, so silence this long means a dead link.
STREAM_READ_TIMEOUT = 45.0


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
        transport: httpx.BaseTransport | None = None,
        *,
        url_source: str = "",
    ) -> None:
        """`token_source` and `url_source` say how they were found, for error messages."""
        self.url = url.rstrip("/")
        try:
            parsed = httpx.URL(self.url)
        except httpx.InvalidURL as exc:
            raise CliError(f"invalid daemon URL {url!r}: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise CliError(f"invalid daemon URL {url!r}: expected http://HOST:PORT")
        self.token_source = token_source
        self.url_source = url_source
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self._http = httpx.Client(
                base_url=self.url, headers=headers, timeout=DEFAULT_TIMEOUT, transport=transport
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise CliError(f"invalid daemon URL {url!r}: {exc}") from None

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

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
        timeout = DEFAULT_TIMEOUT if read_timeout is None else _with_read(read_timeout)
        with self._translated():
            response = self._http.request(
                method,
                path,
                params=_query(params),
                json=body,
                timeout=timeout,
            )
        self._raise_for_status(response)
        try:
            return response.status_code, response.json()
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
        with (
            self._translated(),
            self._http.stream("GET", path, headers=headers, timeout=_with_read(read_timeout)) as r,
        ):
            self._raise_for_status(r)
            try:
                yield from parse_events(r.iter_lines())
            except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                raise StreamInterrupted(f"lost the stream from {self.url}{path}: {exc}") from None
        raise StreamInterrupted(f"the stream from {self.url}{path} ended early")

    def raw_chunks(self, path: str) -> Iterator[bytes]:
        """Yield the body of `path` as it arrives, without decoding it."""
        with (
            self._translated(),
            self._http.stream("GET", path, timeout=_with_read(STREAM_READ_TIMEOUT)) as r,
        ):
            self._raise_for_status(r)
            yield from r.iter_bytes()

    # ----- errors ----------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout):
            where = f" (from {self.url_source})" if self.url_source else ""
            raise DaemonUnreachable(
                f"cannot reach the daemon at {self.url}{where}: is `runyard serve` running?"
            ) from None
        except httpx.TimeoutException:
            raise CliError(f"the daemon at {self.url} did not answer in time") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CliError(f"the request to the daemon at {self.url} failed: {exc}") from None

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        if response.status_code == 401:
            if self.token is None:
                raise CliError(f"the daemon at {self.url} needs a token, but {self.token_source}")
            raise CliError(f"the daemon at {self.url} refused {self.token_source}")
        response.read()
        try:
            body: object = response.json()
        except (ValueError, json.JSONDecodeError):
            body = None
        raise DaemonProblem(
            describe_problem(response.status_code, body, response.reason_phrase),
            response.status_code,
            body,
        )


def _with_read(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(DEFAULT_TIMEOUT.connect, read=seconds, write=30.0, pool=30.0)


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Drop unset parameters and spell booleans the way the API reads them."""
    if params is None:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out
