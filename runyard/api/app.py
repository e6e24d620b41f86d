"""The FastAPI application: routers, auth, error handling and the service lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from runyard import __version__
from runyard.api import (
    routes_daemon,
    routes_docs,
    routes_events,
    routes_keys,
    routes_logs,
    routes_meta,
    routes_notifications,
    routes_runs,
    routes_services,
    routes_tasks,
    routes_v3,
    routes_viewer,
    trigger_route,
)
from runyard.api.access_log import AccessLog
from runyard.api.auth import BearerAuth
from runyard.api.deps import Closing
from runyard.api.errors import install_error_handlers
from runyard.api.limits import BodyLimit
from runyard.api.openapi import serve_document
from runyard.api.uploads import UploadGuard
from runyard.app import Runyard
from runyard.web import routes as dashboard


def create_app(runyard: Runyard) -> FastAPI:
    """Return the HTTP app serving `runyard`; its lifespan starts and stops the service."""
    closing = Closing()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        closing.bind(asyncio.get_running_loop())
        await runyard.start()
        try:
            yield
        finally:
            # Open streams end first, so they do not hold the engine's shutdown.
            closing.close()
            await runyard.stop()

    app = FastAPI(
        title="runyard",
        version=__version__,
        description="Self-hosted automation runner: tasks, runs, logs and events.",
        lifespan=lifespan,
        # routes_docs serves them with their scripts from the daemon (no CDN).
        docs_url=None,
        redoc_url=None,
        # runyard sets up no OpenTelemetry providers; with FastAPI's own
        # telemetry on, every request asked for them first (~10 us each).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runyard = runyard
    app.state.closing = closing
    # Routes are tried in this order: the v3 API, the busiest surface (clients
    # poll it), is matched first.
    routes_v3.add_routes(app)
    # The REST trigger's common request, answered without FastAPI's request
    # handling; it hands every other request back to the routers below.
    app.router.routes.append(trigger_route.route())
    for module in (
        routes_meta,
        routes_tasks,
        routes_services,
        routes_runs,
        routes_logs,
        routes_events,
        routes_daemon,
        routes_keys,
        routes_notifications,
        routes_viewer,
        routes_docs,
    ):
        app.include_router(module.router)
    dashboard.install(app)
    install_error_handlers(app)
    app.add_middleware(
        BearerAuth,
        token=runyard.token,
        opened=lambda _path: runyard.config.metrics.public,
        cluster_secret=runyard.cluster_secret,
    )
    # Bodies are read whole here, within per-address limits, before anyone parses them.
    app.add_middleware(
        UploadGuard,
        v3=lambda: runyard.v3,
        max_uploads=lambda: runyard.config.daemon.max_uploads_per_client,
        bodies=lambda: runyard.bodies,
        token=runyard.token,
    )
    # An oversized body is refused before anything else reads it.
    app.add_middleware(BodyLimit, limit=lambda: runyard.config.daemon.max_request_size)
    if runyard.config.daemon.access_log:
        # Outermost, so refusals of the layers above are logged too.
        app.add_middleware(AccessLog)

    serve_document(app, runyard.tasks, lambda: list(runyard.config.accounts))
    return app
