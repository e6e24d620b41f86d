"""Group commit: many run changes, one transaction, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
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


class StoreWriter:
    """Batch run inserts and updates into as few transactions as the load allows.

    Every change waits in memory until the single flusher takes the whole batch
    to a worker thread and commits it in one transaction; callers that must know
    the change is durable (an accepted trigger) await `write`. The event loop
    never blocks on the database, and one thread writing keeps SQLite free of
    writer contention.
    """

    def __init__(self, store: RunSink) -> None:
        self._store = store
        self._inserts: dict[str, Run] = {}
        self._updates: dict[str, Run] = {}
        self._ticks: dict[str, datetime] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runyard-writer")
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever())

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
        for run in inserts:
            self._inserts[run.id] = run
        for run in updates:
            # A run inserted in this same batch is simply inserted in its newest form.
            if run.id in self._inserts:
                self._inserts[run.id] = run
            else:
                self._updates[run.id] = run
        for task_name, tick in (ticks or {}).items():
            known = self._ticks.get(task_name)
            self._ticks[task_name] = tick if known is None else max(known, tick)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if urgent:
            self._urgent.set()
        self._wakeup.set()
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

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            # A short pause gathers the changes of the next few milliseconds into
            # this batch: far fewer transactions under load, for 5 ms of latency.
            # Someone waiting to be answered (an accepted trigger) ends the pause:
            # under load, what arrives while this batch commits forms the next.
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), _GATHER_SECONDS)
            await asyncio.sleep(0)  # let changes submitted in this same tick join
            self._urgent.clear()
            self._wakeup.clear()
            inserts = list(self._inserts.values())
            updates = list(self._updates.values())
            ticks = self._ticks
            waiters = self._waiters
            self._inserts, self._updates, self._ticks, self._waiters = {}, {}, {}, []
            if not (inserts or updates or ticks):
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                if self._closed:
                    return
                continue
            try:
                if ticks:
                    await loop.run_in_executor(
                        self._thread, self._store.apply, inserts, updates, ticks
                    )
                else:
                    await loop.run_in_executor(self._thread, self._store.apply, inserts, updates)
            except Exception as error:  # noqa: BLE001 - handed to every waiter
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(error)
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def close(self) -> None:
        """Commit whatever is queued, then stop the flusher."""
        self._closed = True
        await self.submit()
        if self._task is not None:
            self._wakeup.set()
            await self._task
        self._thread.shutdown(wait=True)
