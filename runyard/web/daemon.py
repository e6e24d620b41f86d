"""The daemon page: version, uptime, config, database, data dir size, nodes; reload the config."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path as FilePath
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from runyard import __version__
from runyard.app import Runyard
from runyard.clock import utc_now
from runyard.domain import words
from runyard.domain.cluster import odd_nodes
from runyard.exceptions import ConfigError, StoreError
from runyard.web.pages import (
    context,
    current_session,
    read_form,
    runyard_of,
    see_other,
)
from runyard.web.render import page

router = APIRouter(include_in_schema=False)

_SIZE_TTL = 60.0


class DirSize:
    """The data dir's size, measured in a thread at most once a minute (it can hold many files)."""

    def __init__(self) -> None:
        self.value: int | None = None
        self.measured = 0.0
        self._task: asyncio.Task[None] | None = None

    def current(self, path: FilePath) -> int | None:
        stale = time.monotonic() - self.measured > _SIZE_TTL
        if stale and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._measure(path))
        return self.value

    async def _measure(self, path: FilePath) -> None:
        self.value = await asyncio.to_thread(_tree_size, path)
        self.measured = time.monotonic()


def _tree_size(path: FilePath) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _redacted(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:••••@{tail}"


async def _cluster(runyard: Runyard) -> dict[str, Any] | None:
    """Return the nodes as `GET /api/cluster` lists them; None on SQLite (one daemon, no nodes)."""
    if runyard.lease is None:
        return None
    shown: dict[str, Any] = {"this": runyard.node_name, "nodes": [], "odd": [], "error": None}
    try:
        shown["nodes"] = await runyard.cluster_nodes()
    except StoreError as error:
        shown["error"] = str(error)
        return shown
    hashes = {node.name: node.config_hash for node in shown["nodes"]}
    shown["odd"] = odd_nodes(hashes, runyard.node_name)
    return shown


@router.get("/daemon")
async def daemon_page(request: Request) -> Response:
    """Version, uptime, config path, database, data dir size, the nodes, and Reload config."""
    session = current_session(request)
    runyard = runyard_of(request)
    sizes: DirSize = request.app.state.dashboard_sizes
    size = sizes.current(runyard.data_dir)
    if size is None:
        await asyncio.sleep(0.05)  # a small data dir is measured by now
        size = sizes.value
    now = utc_now()
    return page(
        request,
        "daemon.html",
        context(
            request,
            session,
            title="Daemon",
            daemon_version=__version__,
            uptime=words.span((now - runyard.started_at).total_seconds()),
            started_at=runyard.started_at,
            config_path=str(runyard.config.path),
            database=_redacted(runyard.database_url),
            data_dir=str(runyard.data_dir),
            data_size=size,
            cluster=await _cluster(runyard),
            report=request.app.state.dashboard_reloads.pop(session.id, None),
        ),
    )


@router.post("/daemon/reload")
async def daemon_reload(request: Request) -> Response:
    """Re-read the config; the page then shows what changed, or every error."""
    session = current_session(request)
    await read_form(request, session)
    runyard = runyard_of(request)
    reports: dict[str, dict[str, Any]] = request.app.state.dashboard_reloads
    try:
        changes = await runyard.reload()
        reports[session.id] = {"ok": True, "changes": changes}
    except ConfigError as error:
        reports[session.id] = {"ok": False, "path": error.path, "problems": error.problems}
    while len(reports) > 1000:
        reports.pop(next(iter(reports)))
    return see_other("/daemon")
