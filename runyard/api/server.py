"""Run the HTTP app under uvicorn until SIGINT or SIGTERM; SIGHUP reloads the config."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

import uvicorn

from runyard.api.app import create_app
from runyard.api.deps import Closing
from runyard.app import TOKEN_FILE, Runyard
from runyard.exceptions import ConfigError

GRACEFUL_SHUTDOWN_SECONDS = 3
# How long shutdown waits for a SIGHUP reload still being applied.
RELOAD_DRAIN_SECONDS = 5.0


def reload_report(changes: Mapping[str, Sequence[str]]) -> list[str]:
    """Return the lines the daemon prints after a successful reload."""
    parts = [
        f"{label} {', '.join(changes.get(key, ()))}"
        for key, label in (("added", "added"), ("removed", "removed"), ("changed", "changed"))
        if changes.get(key)
    ]
    lines = [f"runyard: reload: {'; '.join(parts) if parts else 'no task changed'}"]
    lines += [
        f"runyard: reload: restart required: {line}" for line in changes.get("restart_required", ())
    ]
    lines += [f"runyard: reload: warning: {line}" for line in changes.get("warnings", ())]
    skipped = changes.get("skipped_runs", ())
    if skipped:
        lines.append(f"runyard: reload: skipped queued runs of removed tasks: {', '.join(skipped)}")
    return lines


def refused_report(error: ConfigError) -> list[str]:
    """Return the lines the daemon prints when a reload finds the new config invalid."""
    return [
        f"runyard: reload refused: {error.path}: {problem}"
        for problem in error.problems or ["invalid config"]
    ]


class SighupReloader:
    """Reload the config on SIGHUP, reporting the outcome; a bad file never stops the daemon."""

    def __init__(self, runyard: Runyard, report: Callable[[str], None]) -> None:
        self._runyard = runyard
        self._report = report
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def install(self) -> None:
        """Handle SIGHUP on the running loop (main thread only)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_signal)
        self._loop = loop

    async def remove(self) -> None:
        """Stop handling SIGHUP and let a reload in progress finish (briefly)."""
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGHUP)
            self._loop = None
        if self._pending:
            _done, late = await asyncio.wait(self._pending, timeout=RELOAD_DRAIN_SECONDS)
            for task in late:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _on_signal(self) -> None:
        if self._loop is None:
            return
        task = self._loop.create_task(self.reload())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def reload(self) -> None:
        """Reload once and report how it went."""
        self._report("runyard: SIGHUP: reloading the config")
        try:
            changes = await self._runyard.reload()
        except ConfigError as error:
            lines = refused_report(error)
        except Exception as error:  # noqa: BLE001 - a failed reload must not end the daemon
            lines = [f"runyard: reload failed: {error}"]
        else:
            lines = reload_report(changes)
        for line in lines:
            self._report(line)


class _Server(uvicorn.Server):
    """uvicorn, telling open streams to end as soon as a stop signal arrives."""

    def __init__(
        self,
        config: uvicorn.Config,
        closing: Closing,
        announce: Callable[[str], None],
        reloader: SighupReloader | None = None,
    ):
        super().__init__(config)
        self._closing = closing
        self._announce = announce
        self._reloader = reloader

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
            _tune_garbage_collection()
            if self._reloader is not None:
                self._reloader.install()
            self._announce(self._listening_url())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._reloader is not None:
            await self._reloader.remove()
        await super().shutdown(sockets)

    def _listening_url(self) -> str:
        host, port = self.config.host, self.config.port
        for server in self.servers:
            for sock in server.sockets:
                port = sock.getsockname()[1]  # the real port when 0 asked for any free one
                break
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"


# Collect the youngest generation after this many more allocations than frees
# of container objects (Python's default is 700), then the older ones after 10
# young and 10 middle collections. A request's objects live while its trigger
# is committed (milliseconds); at the default, a burst of triggers had
# hundreds of young collections a second, each promoting the objects of the
# requests in flight, which then set off full collections, each walking every
# queued run. See bench/http.py.
GC_THRESHOLDS = (50_000, 10, 10)


def _tune_garbage_collection() -> None:
    # What exists once the daemon is up (modules, the app, the config) lives as
    # long as the daemon: frozen out of the collector's sight, it is no longer
    # walked by every full collection.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
        SighupReloader(runyard, lambda line: print(line, flush=True)),
    )
    server.run()
