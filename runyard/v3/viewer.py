"""Viewer links: the URL a trigger answers with, and the run a link's password opens."""

from __future__ import annotations

import asyncio
import hmac
import secrets
import zlib
from collections.abc import Callable
from urllib.parse import urlsplit

from runyard.domain.accounts import hash_secret, viewer_host, viewer_password
from runyard.domain.models import Run, RunStatus
from runyard.domain.text import is_storable
from runyard.exceptions import NotFound
from runyard.store import RunStore
from runyard.v3.ports import OutputOf, RunEngine, Settings

VIEWER_SECRET_BYTES = 24  # 192 random bits in each viewer link's password


def new_password(run_id: str) -> str:
    """Return a new viewer password of the run `run_id`: its id, a dot, a random secret."""
    return viewer_password(run_id, secrets.token_urlsafe(VIEWER_SECRET_BYTES))


class Viewer:
    """Viewer links of runs, and the runs (live or stored) their passwords open."""

    def __init__(
        self,
        engine: RunEngine,
        store: RunStore,
        config: Callable[[], Settings],
        output_of: OutputOf | None = None,
    ) -> None:
        """`config` is read at each call: a reload may change `external_url`.

        `output_of` reads a running run's output wherever it runs; by
        default, from this engine only.
        """
        self._engine = engine
        self._output_of = output_of
        self._store = store
        self._config = config

    def link(self, run: Run, password: str, request_base: Callable[[], str]) -> str:
        """Return the full viewer URL of a run.

        `request_base` returns the base URL the request came in on; it is
        asked only when neither `external_url` nor a specific host says where
        the daemon is reached.
        """
        daemon = self._config().daemon
        if daemon.external_url:
            base = daemon.external_url
        elif daemon.host in ("0.0.0.0", "::", ""):
            base = request_base()
        else:
            base = f"http://{_url_host(daemon.host)}:{daemon.port}"
        base = base.rstrip("/")
        port = urlsplit(base).port or daemon.port
        # Every value is URL-safe as it is (digits, `c-00NN-runyard`, and the
        # password's run id, dot and URL-safe base64), so the query needs no encoding.
        return (
            f"{base}/view/{run.id}?host={viewer_host(run.id)}&port={port}"
            f"&password={password}&taskId={task_number(run.task_name)}"
        )

    async def run(self, run_id: str, password: str | None) -> Run:
        """Return the run if `password` is its viewer secret; NotFound otherwise.

        A wrong secret and an unknown run look the same, so the page reveals
        nothing about which runs exist.
        """
        run = None
        # A run id or secret holding NUL or a lone surrogate names no run; the
        # store must not be asked (PostgreSQL refuses NUL with an error).
        if password and is_storable(run_id) and is_storable(password):
            live = self._engine.live_run(run_id)
            run = live or await asyncio.to_thread(self._store.get_run, run_id)
        if (
            run is None
            or run.secret_hash is None
            or not password
            or not hmac.compare_digest(run.secret_hash, hash_secret(password))
        ):
            raise NotFound("run", run_id)
        return run

    async def output_of(self, run: Run) -> dict[str, list[list[str]]]:
        """Return a run's output data: live while it runs, frozen once it ended."""
        if run.status is RunStatus.ENDED:
            return run.output_data or {}
        if self._output_of is not None:
            return await self._output_of(run)
        return await self._engine.live_output(run.id) or {}

    def display_name(self, task_name: str) -> str:
        """Return the automation name of a task (its task name once removed from the config)."""
        task = self._engine.tasks.get(task_name)
        return task.display_name if task is not None else task_name


def task_number(task_name: str) -> int:
    """Return the `taskId` of a task's viewer links: a stable number derived from its name."""
    return zlib.crc32(task_name.encode("utf-8"))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
