"""Runs the engine records but does not execute: each lifetime of a service's instance.

The services' supervisor owns those processes; the engine only keeps their
record, so that history, logs, the run API, the event feed and the
notifications cover them as they cover a task's runs. The writes go through
the engine's one writer (group commit, retries, bisection of bad changes),
and an end is announced exactly as the runner announces one (`run.ended`,
the run log line, the observer, whoever waits for the end).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection, Mapping, Sequence

from runyard.domain.models import Run
from runyard.engine import run_log
from runyard.engine.events import EventHub
from runyard.engine.runner import Runner
from runyard.engine.runs import event_data, store_end
from runyard.engine.writer import StoreWriter
from runyard.store.runs import RunStore

log = logging.getLogger("runyard.engine")


class RunRecorder:
    """Record the start and end of runs whose process someone else supervises."""

    def __init__(
        self,
        *,
        writer: StoreWriter,
        runner: Runner,
        events: EventHub,
        store: RunStore,
        node: str | None = None,
    ) -> None:
        self._writer = writer
        # Stamped on the runs it records (PostgreSQL, several nodes): a node's
        # start-up recovery takes only its own, and a run without a node would
        # be taken by the next node that starts.
        self._node = node
        self._store = store
        self._runner = runner
        self._events = events
        # Runs kept per name by retention, for names that are not tasks (services):
        # name -> keep_runs. Set by their owner at start and at each reload.
        self.keep_runs: dict[str, int] = {}

    def keep(self, keep_runs: Mapping[str, int]) -> None:
        """Set how many ended runs retention keeps of each of these names."""
        self.keep_runs = dict(keep_runs)

    def started(self, run: Run) -> None:
        """Record `run` as running: queued for the next commit, not waited for.

        The caller spawns at once: a restart must not wait on the database
        (nor stay down while it is away). A daemon killed before the commit
        leaves no row; its owner notes enough to record it at the next start
        (`unrecorded`, `crashed`).
        """
        self._writer.submit(inserts=[self._stamped(run)], urgent=True).add_done_callback(
            _log_write_failure
        )
        self._events.publish("run.started", event_data(run))
        run_log.run_started(run)

    async def unrecorded(self, run_ids: Collection[str]) -> set[str]:
        """Return those of `run_ids` that have no row (their start never committed)."""
        if not run_ids:
            return set()
        stored = await asyncio.to_thread(self._store.existing_run_ids, run_ids)
        return set(run_ids) - stored

    async def crashed(self, runs: Sequence[Run]) -> None:
        """Store runs that were never recorded, already ended (crashed), and announce them."""
        if not runs:
            return
        await self._writer.write(inserts=[self._stamped(run) for run in runs])
        for run in runs:
            self._runner.finish(run)

    async def ended(self, run: Run) -> Run:
        """Store `run`'s end and announce it; return the run as stored.

        StoreUnavailable when the writer gave up (the daemon stops with the
        database away): the row stays `running` and the next daemon ends it
        `crashed`.
        """
        stored, _ = await store_end(self._writer, run, None)
        self._runner.finish(stored)
        return stored

    def _stamped(self, run: Run) -> Run:
        if self._node is None or run.node is not None:
            return run
        return dataclasses.replace(run, node=self._node)


def _log_write_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not record a run's start", exc_info=future.exception())
