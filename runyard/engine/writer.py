"""Group commit: many run changes, one transaction, on a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from runyard.domain.models import Run

_GATHER_SECONDS = 0.005


class RunSink(Protocol):
    def apply(
        self,
        inserts: list[Run],
        updates: list[Run],
        ticks: dict[str, datetime] | None = None,
    ) -> None: ...


@dataclass
class _Batch:
    """Changes waiting for the next transaction, and who waits for them."""

    inserts: dict[str, Run] = field(default_factory=dict)
    updates: dict[str, Run] = field(default_factory=dict)
    ticks: dict[str, datetime] = field(default_factory=dict)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    urgent: bool = False

    def has_changes(self) -> bool:
        return bool(self.inserts or self.updates or self.ticks)


class StoreWriter:
    """Batch run inserts and updates into as few transactions as the load allows.

    Changes wait in memory until the writer thread takes the whole batch and
    commits it in one transaction; callers that must know the change is
    durable (an accepted trigger) await `write`. The thread takes its next
    batch as soon as a commit ends, without a round trip through the event
    loop: under load, what arrives while one batch commits forms the next.
    The event loop never blocks on the database, and one thread writing keeps
    SQLite free of writer contention.
    """

    def __init__(self, store: RunSink) -> None:
        self._store = store
        self._batch = _Batch()
        self._changed = threading.Condition()  # guards _batch and _closed
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # A daemon thread: a process ending without close() (a failed start)
        # must not hang on it. What it had not committed was never answered,
        # and SQLite or PostgreSQL roll back a transaction cut short.
        self._thread = threading.Thread(
            target=self._write_forever, name="runyard-writer", daemon=True
        )

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def submit(
        self,
        inserts: Iterable[Run] = (),
        updates: Iterable[Run] = (),
        ticks: dict[str, datetime] | None = None,
        *,
        urgent: bool = False,
    ) -> asyncio.Future[None]:
        """Queue changes; the returned future resolves once they are committed.

        `ticks` (task name -> cron tick) commit in the same transaction as the
        runs, so a tick counts as fired exactly when its run exists. `urgent`
        changes (a caller waits to be answered) cut the gathering pause short.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._changed:
            batch = self._batch
            for run in inserts:
                batch.inserts[run.id] = run
            for run in updates:
                # A run inserted in this same batch is simply inserted in its newest form.
                if run.id in batch.inserts:
                    batch.inserts[run.id] = run
                else:
                    batch.updates[run.id] = run
            for task_name, tick in (ticks or {}).items():
                known = batch.ticks.get(task_name)
                batch.ticks[task_name] = tick if known is None else max(known, tick)
            batch.waiters.append(future)
            batch.urgent = batch.urgent or urgent
            self._changed.notify()
        return future

    async def write(
        self,
        inserts: Iterable[Run] = (),
        updates: Iterable[Run] = (),
        ticks: dict[str, datetime] | None = None,
        *,
        urgent: bool = False,
    ) -> None:
        """Queue changes and wait until they are committed."""
        await self.submit(inserts, updates, ticks, urgent=urgent)

    async def close(self) -> None:
        """Commit whatever is queued, then stop the writer thread."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)

    # ----- the writer thread -------------------------------------------------------

    def _write_forever(self) -> None:
        while True:
            batch, last = self._next_batch()
            error: Exception | None = None
            if batch.has_changes():
                try:
                    self._store.apply(
                        list(batch.inserts.values()),
                        list(batch.updates.values()),
                        batch.ticks or None,
                    )
                except Exception as exc:  # noqa: BLE001 - handed to every waiter
                    error = exc
            self._settle(batch.waiters, error)
            if last:
                return

    def _next_batch(self) -> tuple[_Batch, bool]:
        """Wait for changes and take them all; also say whether the writer is closing."""
        with self._changed:
            while not (self._batch.waiters or self._closed):
                self._changed.wait()
            # A short pause gathers the changes of the next few milliseconds into
            # this batch: far fewer transactions under load, for 5 ms of latency.
            # Someone waiting to be answered (an accepted trigger) ends the pause.
            deadline = time.monotonic() + _GATHER_SECONDS
            while not (self._batch.urgent or self._closed):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            batch, self._batch = self._batch, _Batch()
            return batch, self._closed

    def _settle(self, waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
        if not waiters or self._loop is None:
            return
        # The loop is gone only after close() returned, when nobody waits any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, waiters, error)


def _resolve(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if waiter.done():  # its caller went away (a cancelled request)
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
