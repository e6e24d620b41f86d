"""Run the HTTP app under uvicorn until SIGINT or SIGTERM."""

from __future__ import annotations

import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

from runyard.api.app import create_app
from runyard.api.deps import Closing
from runyard.app import TOKEN_FILE, Runyard

GRACEFUL_SHUTDOWN_SECONDS = 3


class _Server(uvicorn.Server):
    """uvicorn, telling open streams to end as soon as a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, closing: Closing, announce: Callable[[str], None]):
        super().__init__(config)
        self._closing = closing
        self._announce = announce

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn raises captured signals again once it has shut down, which
        # would end a clean, requested stop as "killed by SIGTERM".
        self._captured_signals.clear()
        # uvicorn waits for open connections before the lifespan shutdown; SSE
        # streams never end by themselves, so end them now.
        self._closing.close()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._announce(self._listening_url())

    def _listening_url(self) -> str:
        host, port = self.config.host, self.config.port
        for server in self.servers:
            for sock in server.sockets:
                port = sock.getsockname()[1]  # the real port when 0 asked for any free one
                break
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"


def serve(runyard: Runyard) -> None:
    """Serve the API on the configured host and port until stopped by a signal."""
    settings = runyard.config.daemon
    app = create_app(runyard)
    if runyard.token_created:
        print(
            f"Created the API token (shown only now): {runyard.token}\n"
            f"It is stored in {runyard.data_dir / TOKEN_FILE}; "
            "send it as 'Authorization: Bearer <token>'.",
            flush=True,
        )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="asyncio",  # the loop the engine is measured on (bench/engine.py)
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        access_log=False,
    )
    server = _Server(
        config,
        app.state.closing,
        lambda url: print(f"runyard listening on {url}", flush=True),
    )
    server.run()
