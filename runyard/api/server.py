"""Run the daemon: lock the data dir, bind the port, then serve under uvicorn.

The order is what keeps a second daemon harmless: the data-dir lock is taken
before anything in the data dir is read, and the port is bound before the
engine's recovery (which ends the runs a dead daemon left and clears its run
directories) can touch anything. Runs until SIGINT or SIGTERM; SIGHUP reloads
the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

import uvicorn

from runyard import __version__
from runyard.api.app import create_app
from runyard.api.connections import (
    ACCEPT_BURST,
    ConnectionGuard,
    ConnectionLimits,
    descriptor_budget,
)
from runyard.api.deps import Closing
from runyard.app import TOKEN_FILE, Runyard
from runyard.config.loader import Config
from runyard.daemon_lock import DataDirLock
from runyard.exceptions import ConfigError, RunyardError
from runyard.store.database import shown_database_url

log = logging.getLogger("runyard.daemon")

GRACEFUL_SHUTDOWN_SECONDS = 3
# Connections the kernel queues while the daemon is busy. asyncio also accepts
# up to this many in one go before any of them reaches the connection cap, so
# it is part of the descriptors kept aside (connections.RESERVED_DESCRIPTORS).
# A longer queue was tried: clients that connect and leave at once then pile
# up in it by the thousand, and a new client waits behind all of them.
LISTEN_BACKLOG = ACCEPT_BURST
# How long shutdown waits for a SIGHUP reload still being applied.
RELOAD_DRAIN_SECONDS = 5.0


class SighupReloader:
    """Reload the config on SIGHUP, reporting the outcome; a bad file never stops the daemon."""

    def __init__(self, runyard: Runyard) -> None:
        self._runyard = runyard
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
        """Reload once; Runyard.reload logs what changed, or why the file was refused."""
        log.info("SIGHUP: reloading the config")
        try:
            await self._runyard.reload()
        except ConfigError:
            pass  # logged, problem by problem, by the reload itself
        except Exception:  # a failed reload must not end the daemon
            log.exception("reload failed")


class _Server(uvicorn.Server):
    """uvicorn, telling open streams to end as soon as a stop signal arrives."""

    def __init__(
        self,
        config: uvicorn.Config,
        closing: Closing,
        announce: Callable[[str], None],
        reloader: SighupReloader | None = None,
        connections: ConnectionGuard | None = None,
    ):
        super().__init__(config)
        self._closing = closing
        self._announce = announce
        self._reloader = reloader
        self._connections = connections

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
            if self._connections is not None:
                self._connections.start()
            self._announce(listen_url(self.config.host, self.config.port))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._reloader is not None:
            await self._reloader.remove()
        if self._connections is not None:
            self._connections.stop()
        await super().shutdown(sockets)


def listen_url(host: str, port: int) -> str:
    """Return the URL of a daemon listening on host:port."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def bind_listener(host: str, port: int) -> socket.socket:
    """Return a socket listening on host:port (0: any free port); RunyardError if it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle's algorithm off
    # (TCP_NODELAY) only on sockets that say they are TCP, and with it on,
    # small answers wait out the client's delayed ACK (40 ms each).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # Lets a restarted daemon listen while connections of the last one linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        hint = " (is another daemon listening there?)" if error.errno == 98 else ""
        raise RunyardError(
            f"cannot listen on {listen_url(host, port)}: {reason}{hint}; "
            "choose another port with --port or [daemon] port"
        ) from None
    sock.set_inheritable(False)
    return sock


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


def run_daemon(
    config: Config,
    *,
    data_dir_override: str | None = None,
    host: str | None = None,
    port: int | None = None,
    access_log: bool = False,
) -> None:
    """Start the daemon in its safe order and serve until stopped.

    Raise DataDirBusy when another daemon holds the data dir, RunyardError when
    the port cannot be bound: either way before anything in the data dir was
    touched but the lock file.
    """
    lock = DataDirLock.acquire(config.daemon.data_dir)
    try:
        listener = bind_listener(
            host if host is not None else config.daemon.host,
            port if port is not None else config.daemon.port,
        )
        overrides: dict[str, Any] = {"port": listener.getsockname()[1]}
        if host is not None:
            overrides["host"] = host
        if access_log:
            overrides["access_log"] = True
        with listener:
            runyard = Runyard(
                config, data_dir_override=data_dir_override, daemon_overrides=overrides
            )
            serve(runyard, listener)
    finally:
        lock.release()


def serve(runyard: Runyard, listener: socket.socket) -> None:
    """Serve the API on `listener` (bound and listening) until stopped by a signal."""
    settings = runyard.config.daemon
    app = create_app(runyard)
    log_start(runyard)
    if runyard.token_created:
        log.warning(
            "Created the API token (shown only now): %s\n"
            "It is stored in %s; send it as 'Authorization: Bearer <token>'.",
            runyard.token,
            runyard.data_dir / TOKEN_FILE,
        )
    max_connections = descriptor_budget(settings.max_connections)
    if max_connections < settings.max_connections:
        log.warning(
            "max_connections lowered from %d to %d: the open-file limit allows no more",
            settings.max_connections,
            max_connections,
        )
    connections = ConnectionGuard(
        ConnectionLimits(
            max_connections=max_connections,
            header_timeout=settings.header_timeout.total_seconds(),
            body_timeout=settings.body_timeout.total_seconds(),
        )
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="asyncio",  # the loop the engine is measured on (bench/engine.py)
        http=connections.protocol_class(),
        backlog=LISTEN_BACKLOG,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        access_log=False,  # runyard's own (api/access_log.py) never logs query strings
        log_config=None,  # the daemon's logging (daemon_log.py) is set up already
    )
    server = _Server(
        config,
        app.state.closing,
        lambda url: log.info("runyard listening on %s", url, extra={"url": url}),
        SighupReloader(runyard),
        connections,
    )
    server.run(sockets=[listener])


def log_start(runyard: Runyard) -> None:
    """Log the start-up summary: version, config, data dir, database, tasks, listen URL."""
    config = runyard.config
    tasks = len(config.tasks)
    url = listen_url(config.daemon.host, config.daemon.port)
    database = shown_database_url(runyard.database_url)
    fields: Mapping[str, object] = {
        "version": __version__,
        "config": str(config.path),
        "data_dir": str(runyard.data_dir),
        "database": database,
        "tasks": tasks,
        "url": url,
    }
    log.info(
        "runyard %s starting: config %s, data dir %s, database %s, %d task%s, listen URL %s",
        __version__,
        config.path,
        runyard.data_dir,
        database,
        tasks,
        "" if tasks == 1 else "s",
        url,
        extra=dict(fields),
    )
