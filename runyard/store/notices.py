"""Nodes of one PostgreSQL tell each other when a task's runs free or take a place (LISTEN/NOTIFY).

A node whose claim had to wait (store/claims.py: a limit full, an older run
queued elsewhere) tries again when another node's run of that task ends or
starts, instead of polling: every commit that ends or starts runs on a node
of several sends `NOTIFY runyard_lanes` with their task names, delivered to
the listeners when it commits. Each node listens on a connection of its own,
on a thread of its own. A notification can be lost (the listening connection
breaks): on reconnecting the listener says "anything may have changed", and
the claims' own slow retry covers what remains.

A trigger of an on_overlap = kill task admitted on one node may stop a run
of that task running on another: `NOTIFY runyard_stop` with the run ids, on
the same listening connection; the node running one of them stops it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("runyard.store")

CHANNEL = "runyard_lanes"
STOP_CHANNEL = "runyard_stop"
# PostgreSQL refuses payloads of 8000 bytes or more: past this, "every task".
_MAX_PAYLOAD = 7000
_RECONNECT_SECONDS = 1.0
_POLL_SECONDS = 0.5  # how soon close() is noticed


def notify_tasks(connection: Connection, task_names: Iterable[str]) -> None:
    """Tell the other nodes, once this transaction commits, that these tasks' runs moved."""
    names = sorted(set(task_names))
    if not names:
        return
    payload = json.dumps(names)
    if len(payload.encode("utf-8")) >= _MAX_PAYLOAD:
        payload = ""
    connection.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))


def notify_stop(connection: Connection, run_ids: Iterable[str]) -> None:
    """Ask the node running each of these runs, once this transaction commits, to stop it."""
    ids = sorted(set(run_ids))
    # A run id is 26 characters: a few hundred fit in one payload.
    for start in range(0, len(ids), 200):
        payload = json.dumps(ids[start : start + 200])
        connection.execute(sa.select(sa.func.pg_notify(STOP_CHANNEL, payload)))


def parse(payload: str) -> set[str] | None:
    """The task names of a notification; None: any task."""
    if not payload:
        return None
    try:
        names = json.loads(payload)
    except ValueError:
        return None
    return {str(name) for name in names} if isinstance(names, list) else None


class LaneListener:
    """Listen for other nodes' notifications; call `on_tasks` with their task names (None: any).

    `on_stop` is called with the ids of runs a node asked to stop.
    """

    def __init__(
        self,
        engine: Engine,
        on_tasks: Callable[[set[str] | None], None],
        on_stop: Callable[[set[str]], None] | None = None,
    ) -> None:
        self._engine = engine
        self._on_tasks = on_tasks
        self._on_stop = on_stop
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._listen_forever, name="runyard-listen", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _listen_forever(self) -> None:
        while not self._closed.is_set():
            try:
                self._listen()
            except Exception as error:  # noqa: BLE001 - the listener must outlive any failure
                if not self._closed.is_set():
                    log.warning("listening for other nodes failed, trying again: %r", error)
                self._closed.wait(_RECONNECT_SECONDS)

    def _listen(self) -> None:
        # A connection of its own, out of the pool: it stays in LISTEN.
        pooled = self._engine.raw_connection()
        driver = pooled.driver_connection  # (detach() forgets it)
        pooled.detach()
        if driver is None:
            raise RuntimeError("the database driver gave no connection")
        try:
            driver.autocommit = True
            driver.execute(f"LISTEN {CHANNEL}")
            if self._on_stop is not None:
                driver.execute(f"LISTEN {STOP_CHANNEL}")
            self._on_tasks(None)  # anything may have moved while nobody listened
            while not self._closed.is_set():
                for notice in driver.notifies(timeout=_POLL_SECONDS):
                    if notice.channel == STOP_CHANNEL and self._on_stop is not None:
                        self._on_stop(parse(notice.payload) or set())
                    else:
                        self._on_tasks(parse(notice.payload))
        finally:
            pooled.close()
