"""What every router needs: the Runyard behind the app, `$schema` URLs, the closing signal."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import URL
from starlette.types import Scope

from runyard.app import Runyard


class Closing:
    """Tell open streams (SSE, waits) that the server is going down.

    uvicorn drains connections *before* the lifespan shutdown stops the
    engine, so a stream waiting for engine events would hold shutdown until
    the graceful timeout; streams watch this signal instead.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the server's event loop (called at lifespan startup)."""
        self._loop = loop
        self._event = asyncio.Event()
        self._closed = False

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Set the signal; safe from any thread and from signal handlers."""
        self._closed = True
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        """Return once the server is closing."""
        if self._event is None:
            self.bind(asyncio.get_running_loop())
        assert self._event is not None
        if self._closed:
            return
        await self._event.wait()


# The dependencies are `async def` on purpose: FastAPI runs a plain `def`
# dependency in its thread pool, a thread hop on every request.
async def get_runyard(request: Request) -> Runyard:
    runyard: Runyard = request.app.state.runyard
    return runyard


async def get_closing(request: Request) -> Closing:
    closing: Closing = request.app.state.closing
    return closing


RunyardDep = Annotated[Runyard, Depends(get_runyard)]
ClosingDep = Annotated[Closing, Depends(get_closing)]


def schema_url(base_url: URL | str, name: str) -> str:
    """Return the URL of the JSON Schema called `name` under the app's base URL."""
    return f"{str(base_url).rstrip('/')}/schemas/{name}.json"


def base_url(scope: Scope) -> str:
    """Return the request's base URL as text: `str(request.base_url)`, remembered.

    Starlette builds the URL anew for each request (~10 us); a daemon is
    reached under a handful of host names, so the text is kept per scheme,
    host header, server address and root path.
    """
    host: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value
            break
    server = scope.get("server")
    return _base_url(
        scope.get("scheme", "http"),
        None if server is None else tuple(server),
        host,
        scope.get("app_root_path", scope.get("root_path", "")),
    )


# Bounded: the host header is the client's to choose.
@functools.lru_cache(maxsize=256)
def _base_url(
    scheme: str, server: tuple[str, int] | None, host: bytes | None, root_path: str
) -> str:
    scope: Scope = {
        "type": "http",
        "scheme": scheme,
        "server": server,
        "root_path": root_path,
        "path": root_path,
        "query_string": b"",
        "headers": [] if host is None else [(b"host", host)],
    }
    return str(Request(scope).base_url)


async def schema_base(request: Request) -> str:
    """Return the base URL `$schema` links are built on."""
    return base_url(request.scope)


SchemaBase = Annotated[str, Depends(schema_base)]
