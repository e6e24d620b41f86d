"""Group commit: many run changes, one transaction, on a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from runyard.domain.models import Run
from runyard.exceptions import DiskFull, LeaseLost, StoreUnavailable
from runyard.store.claims import AdmitTrigger, Claim, StartLimits

log = logging.getLogger("runyard.engine.writer")

_GATHER_SECONDS = 0.005
# Backoff between tries of a batch the database refused for a transient reason.
FIRST_RETRY_SECONDS = 0.05
MAX_RETRY_SECONDS = 2.0
# How long close() keeps trying to commit what is queued while the database is away.
CLOSE_GIVE_UP_SECONDS = 10.0


class RunSink(Protocol):
    def apply(
        self,
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: dict[str, datetime] | None = None,
        *,
        replay: bool = False,
    ) -> object: ...


class ClaimingSink(Protocol):
    """A store several nodes share: cron ticks claimed once, run starts claimed under limits."""

    def apply(
        self,
        inserts: Sequence[Run],
        updates: Sequence[Run],
        ticks: dict[str, datetime] | None = None,
        *,
        replay: bool = False,
        claims: dict[str, datetime] | None = None,
        starts: Sequence[Run] = (),
        start_limits: StartLimits | None = None,
        admissions: Sequence[AdmitTrigger] = (),
    ) -> dict[str, Claim]: ...


@dataclass(slots=True, eq=False)
class _Change:
    """One caller's changes: they commit together or fail together, and settle its future."""

    inserts: Sequence[Run]
    updates: Sequence[Run]
    ticks: dict[str, datetime] | None
    # Resolved with None, or for a change with `starts`, each start's Claim.
    future: asyncio.Future[Any]
    # time.monotonic() after which the caller is answered "unavailable" rather
    # than kept waiting; None: the daemon's own change, tried until it lands.
    deadline: float | None
    # A commit holding this change failed in a way that may have landed it:
    # it is never given up, only tried again until the database answers.
    in_doubt: bool = False
    # Cron ticks this change fires only if no other node fired them (TickTaken).
    claims: dict[str, datetime] | None = None
    # Runs this node starts if the cluster's limits let it (store/claims.py).
    starts: Sequence[Run] = ()
    start_limits: StartLimits | None = None
    # Triggers among `inserts` admitted under the cluster's counts (claims.admit_triggers).
    admissions: Sequence[AdmitTrigger] = ()
    claimed: dict[str, Claim] | None = None


@dataclass
class _Batch:
    """Changes waiting for the next transaction, merged, and the changes they came from."""

    inserts: dict[str, Run] = field(default_factory=dict)
    updates: dict[str, Run] = field(default_factory=dict)
    ticks: dict[str, datetime] = field(default_factory=dict)
    claims: dict[str, datetime] = field(default_factory=dict)
    starts: dict[str, Run] = field(default_factory=dict)
    start_limits: StartLimits = field(default_factory=StartLimits)
    admissions: list[AdmitTrigger] = field(default_factory=list)
    changes: list[_Change] = field(default_factory=list)
    urgent: bool = False

    def add(self, change: _Change) -> None:
        inserts = self.inserts
        for run in change.inserts:
            inserts[run.id] = run
        for run in change.updates:
            # A run inserted in this same batch is simply inserted in its newest form.
            if run.id in inserts:
                inserts[run.id] = run
            else:
                self.updates[run.id] = run
        if change.ticks:
            for task_name, tick in change.ticks.items():
                known = self.ticks.get(task_name)
                self.ticks[task_name] = tick if known is None else max(known, tick)
        if change.claims:
            # The scheduler fires one task's ticks one after the other, awaiting
            # each: one batch never holds two claims of a task.
            for task_name, tick in change.claims.items():
                known = self.claims.get(task_name)
                self.claims[task_name] = tick if known is None else max(known, tick)
        if change.starts:
            for run in change.starts:
                self.starts[run.id] = run
        if change.start_limits is not None:
            self.start_limits.merge(change.start_limits)
        self.admissions.extend(change.admissions)
        self.changes.append(change)

    def has_changes(self) -> bool:
        return bool(self.inserts or self.updates or self.ticks or self.claims or self.starts)


def _merged(changes: Iterable[_Change]) -> _Batch:
    batch = _Batch()
    for change in changes:
        batch.add(change)
    return batch


class StoreWriter:
    """Batch run inserts and updates into as few transactions as the load allows.

    Changes wait in memory until the writer thread takes the whole batch and
    commits it in one transaction; callers that must know the change is
    durable (an accepted trigger) await `write`. The thread takes its next
    batch as soon as a commit ends, without a round trip through the event
    loop: under load, what arrives while one batch commits forms the next.
    The event loop never blocks on the database, and one thread writing keeps
    SQLite free of writer contention.

    Failures never spill from one caller to another. A batch the database
    refuses for good (a value it cannot store) is split in halves, and the
    halves again, until only the changes at fault fail; everyone else gets
    their own outcome. A batch refused for a transient reason (connection
    lost, server restarting, SQLite locked, disk full) is tried again with
    backoff, with whatever arrived meanwhile, until it lands; a caller who
    gave a deadline is answered StoreUnavailable once it passes (at once on a
    full disk), and its changes leave the batch before the next try, so they
    are never recorded after that answer.
    """

    def __init__(self, store: RunSink, on_commit: Callable[[float], None] | None = None) -> None:
        self._store = store
        # Told each landed commit's duration in seconds, on the writer thread.
        self._on_commit = on_commit
        self._batch = _Batch()
        self._changed = threading.Condition()  # guards _batch and _closed
        self._closed = False
        self._finished = False  # the thread took its last batch: nothing queued is written
        self._loop: asyncio.AbstractEventLoop | None = None
        # The last transient failure and when it came (time.monotonic()); None
        # once a commit lands. Read by health checks on the event loop.
        self.failure: StoreUnavailable | None = None
        self.failed_at = 0.0
        self._retrying = False  # a batch that failed transiently waits for its next try
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
        give_up_after: float | None = None,
        claims: dict[str, datetime] | None = None,
        starts: Sequence[Run] = (),
        start_limits: StartLimits | None = None,
        admissions: Sequence[AdmitTrigger] = (),
    ) -> asyncio.Future[Any]:
        """Queue changes; the returned future resolves once they are committed.

        `ticks` (task name -> cron tick) commit in the same transaction as the
        runs, so a tick counts as fired exactly when its run exists. `urgent`
        changes (a caller waits to be answered) cut the gathering pause short.
        `give_up_after` (seconds): while the database is unavailable, fail
        with StoreUnavailable after that long instead of waiting for it; the
        changes are then not recorded, ever. Without it, transient failures
        are retried until the changes land. StoreError: they can never be.
        `claims` (task name -> tick, PostgreSQL only) are ticks recorded only
        if no other node recorded them: TickTaken when one did, and nothing
        of this change is stored. `starts` and `admissions` (several nodes):
        see `claim` and `admit`.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        change = _Change(
            inserts if isinstance(inserts, list | tuple) else tuple(inserts),
            updates if isinstance(updates, list | tuple) else tuple(updates),
            ticks,
            future,
            None if give_up_after is None else time.monotonic() + give_up_after,
            claims=claims or None,
            starts=starts,
            start_limits=start_limits,
            admissions=admissions,
        )
        with self._changed:
            if self._finished:
                future.set_exception(StoreUnavailable("runyard is shutting down"))
                return future
            batch = self._batch
            # Waking the thread costs a context switch and a turn of the
            # interpreter lock: only when it waits for a first change, or an
            # urgent change must cut its gathering pause short. Otherwise it is
            # gathering or committing, and takes this batch when it is done.
            wake = not batch.changes or (urgent and not batch.urgent)
            batch.add(change)
            if urgent:
                batch.urgent = True
            if wake:
                self._changed.notify()
        return future

    async def write(
        self,
        inserts: Iterable[Run] = (),
        updates: Iterable[Run] = (),
        ticks: dict[str, datetime] | None = None,
        *,
        urgent: bool = False,
        give_up_after: float | None = None,
        claims: dict[str, datetime] | None = None,
    ) -> None:
        """Queue changes and wait until they are committed (see `submit`)."""
        await self.submit(
            inserts, updates, ticks, urgent=urgent, give_up_after=give_up_after, claims=claims
        )

    async def claim(self, starts: Sequence[Run], limits: StartLimits) -> dict[str, Claim]:
        """Start these runs where the cluster's limits let them; return each one's Claim.

        Several nodes only. Claimed in the next batch's transaction, after its
        other changes (runs that batch ends no longer count), and tried again
        on transient failures until it lands, like the daemon's own changes.
        """
        future = self.submit(urgent=True, starts=starts, start_limits=limits)
        claimed: dict[str, Claim] = await future
        return claimed

    async def admit(
        self,
        inserts: Sequence[Run],
        admission: AdmitTrigger,
        limits: StartLimits,
        *,
        ticks: dict[str, datetime] | None = None,
        claims: dict[str, datetime] | None = None,
        give_up_after: float | None = None,
    ) -> dict[str, Claim]:
        """Insert a trigger's runs and admit them under the cluster's counts; return their fates.

        Several nodes only (claims.admit_triggers): each run of `admission`
        is GRANTED (started: stored in its running form), left to WAIT, or
        ended SKIPPED or QUEUE_FULL. `ticks`, `claims`, `give_up_after`: see
        `submit`.
        """
        future = self.submit(
            inserts,
            ticks=ticks,
            urgent=True,
            give_up_after=give_up_after,
            claims=claims,
            start_limits=limits,
            admissions=(admission,),
        )
        fates: dict[str, Claim] = await future
        return fates

    async def close(self) -> None:
        """Commit whatever is queued, then stop the writer thread.

        While the database is unavailable, queued changes are tried for
        CLOSE_GIVE_UP_SECONDS at most: what they recorded (a run's start or
        end) the next daemon recovers from the start log.
        """
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)

    # ----- the writer thread -------------------------------------------------------

    def _write_forever(self) -> None:
        while True:
            batch, last = self._next_batch()
            if batch.has_changes():
                self._commit(batch, absorb=True)
            else:
                self._settle(batch.changes, None)
            if last:
                return

    def _next_batch(self) -> tuple[_Batch, bool]:
        """Wait for changes and take them all; also say whether the writer is closing."""
        with self._changed:
            while not (self._batch.changes or self._closed):
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
            self._finished = self._closed
            return batch, self._closed

    def _commit(self, batch: _Batch, *, absorb: bool) -> None:
        """Commit `batch` and settle each of its changes with its own outcome.

        `absorb`: between tries after a transient failure, take in what was
        queued meanwhile. Only the batch taken whole may: a half of a split
        batch must land before the changes that were queued after all of it.
        """
        delay = FIRST_RETRY_SECONDS
        close_deadline: float | None = None
        replay = False
        while True:
            try:
                started = time.perf_counter()
                if batch.claims or batch.starts or batch.admissions:
                    # Only a store of several nodes is given claims (ClaimingSink).
                    claiming: ClaimingSink = self._store  # type: ignore[assignment]
                    claimed = claiming.apply(
                        list(batch.inserts.values()),
                        list(batch.updates.values()),
                        batch.ticks or None,
                        replay=replay,
                        claims=batch.claims,
                        starts=list(batch.starts.values()),
                        start_limits=batch.start_limits,
                        admissions=batch.admissions,
                    )
                    _share_claims(batch.changes, claimed)
                else:
                    self._store.apply(
                        list(batch.inserts.values()),
                        list(batch.updates.values()),
                        batch.ticks or None,
                        replay=replay,
                    )
                elapsed = time.perf_counter() - started
            except LeaseLost as error:
                # Another node took this one's lease over and recorded its runs:
                # nothing queued before that may land now, in this batch or a half.
                log.warning("dropped %d queued change(s): %s", len(batch.changes), error)
                self.failure, self._retrying = None, False
                self._settle(batch.changes, error)
                return
            except StoreUnavailable as error:
                if self.failure is None:
                    log.warning("the database refused a write, trying again: %s", error)
                self.failure, self.failed_at = error, time.monotonic()
                self._retrying = True
                if error.maybe_committed:
                    replay = True
                    for change in batch.changes:
                        change.in_doubt = True
                batch = self._give_up_waiting(batch, error)
                if not batch.changes:
                    self._retrying = False
                    return
                closing = self._pause(delay)
                if closing:
                    close_deadline = close_deadline or time.monotonic() + CLOSE_GIVE_UP_SECONDS
                    if time.monotonic() >= close_deadline:
                        log.error(
                            "giving up on %d queued change(s) at shutdown: %s",
                            len(batch.changes),
                            error,
                        )
                        self._settle(batch.changes, error)
                        self._retrying = False
                        return
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                if absorb:
                    batch = self._absorb(batch)
                continue
            except Exception as error:  # noqa: BLE001 - settled on its changes alone
                self.failure, self._retrying = None, False
                self._isolate(batch, error)
                return
            if self.failure is not None:
                log.info("the database takes writes again")
                self.failure, self._retrying = None, False
            if self._on_commit is not None:
                # Before the callers hear of it: whoever waited on the commit sees it counted.
                self._on_commit(elapsed)
            self._settle(batch.changes, None)
            return

    def _isolate(self, batch: _Batch, error: Exception) -> None:
        """Split a batch the database refused for good until only the faulty changes fail."""
        changes = batch.changes
        if len(changes) == 1:
            self._settle(changes, error)
            return
        middle = len(changes) // 2
        # In order: a later change may update a run an earlier one inserts.
        self._commit(_merged(changes[:middle]), absorb=False)
        self._commit(_merged(changes[middle:]), absorb=False)

    def failing(self, within: float = 2 * MAX_RETRY_SECONDS) -> StoreUnavailable | None:
        """Return the transient failure of the writes waiting for a next try, if any.

        A failure with nothing left to try (its callers gave up) counts for
        `within` seconds: after that, only a new write can tell.
        """
        failure = self.failure
        if failure is None:
            return None
        if self._retrying or time.monotonic() - self.failed_at <= within:
            return failure
        return None

    def _give_up_waiting(self, batch: _Batch, error: StoreUnavailable) -> _Batch:
        """Fail the changes whose callers stop waiting now; return the batch without them.

        On a full disk a caller stops waiting at once: space rarely comes back
        within seconds. Changes in doubt are kept: answering "not recorded"
        could be false.
        """
        now = time.monotonic()
        disk_full = isinstance(error, DiskFull)
        given_up = [
            change
            for change in batch.changes
            if change.deadline is not None
            and not change.in_doubt
            and (disk_full or now >= change.deadline)
        ]
        if not given_up:
            return batch
        self._settle(given_up, error)
        gone = {id(change) for change in given_up}
        return _merged(change for change in batch.changes if id(change) not in gone)

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds` (less if close() is called now); return whether it is closing."""
        deadline = time.monotonic() + seconds
        with self._changed:
            # New changes notify too: they wait for the next try, not cut the backoff short.
            closed_before = self._closed
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed != closed_before:
                    return self._closed
                self._changed.wait(left)

    def _absorb(self, batch: _Batch) -> _Batch:
        with self._changed:
            if self._finished:
                return batch  # nothing more is queued after the last batch
            queued, self._batch = self._batch, _Batch()
        if not queued.changes:
            return batch
        return _merged([*batch.changes, *queued.changes])

    def _settle(self, changes: list[_Change], error: Exception | None) -> None:
        """Resolve the futures of `changes` on the loop: committed, or failed with `error`."""
        if not changes or self._loop is None:
            return
        # The loop is gone only after close() returned, when nobody waits any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, changes, error)


def _share_claims(changes: list[_Change], claimed: dict[str, Claim]) -> None:
    """Give each change the Claim of its starts; a run claimed twice starts for the first only."""
    granted: set[str] = set()
    for change in changes:
        if change.admissions:
            change.claimed = {
                run.pending.id: claimed.get(run.pending.id, Claim.WAIT)
                for trigger in change.admissions
                for run in trigger.runs
            }
        if not change.starts:
            continue
        change.claimed = {}
        for run in change.starts:
            claim = claimed.get(run.id, Claim.WAIT)
            if claim is Claim.GRANTED:
                if run.id in granted:
                    claim = Claim.GONE
                granted.add(run.id)
            change.claimed[run.id] = claim


def _resolve(changes: list[_Change], error: Exception | None) -> None:
    for change in changes:
        waiter = change.future
        if waiter.done():  # its caller went away (a cancelled request)
            continue
        if error is None:
            waiter.set_result(change.claimed)
        else:
            waiter.set_exception(error)
