"""The cron scheduler: fires each task's ticks once, through the engine's admission.

One asyncio task sleeps until the earliest due instant (it never polls), fires
what is due, and sleeps again. A tick counts as fired when its run is
committed, in the same transaction as the task's `last_tick`, so a restart
(even within the same second) never fires it twice. Ticks that came and went
while the daemon was down, or that a wall-clock jump forward skipped over, are
recorded as one `missed` run per task, and `catch_up` decides what runs for
them. A jump backward fires nothing twice: only ticks after `last_tick` fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from runyard.clock import Clock
from runyard.domain.models import CatchUp, Schedule, TaskDefinition, TriggeredBy
from runyard.domain.schedule import (
    count_ticks_between,
    jitter_offset,
    next_tick,
    ticks_between,
)
from runyard.engine.core import Engine
from runyard.exceptions import NodeFenced, RunyardError, ShuttingDown, TickTaken
from runyard.store.runs import RunStore

log = logging.getLogger("runyard.scheduler")

# A tick fired this late is still "on time"; older ones were missed (downtime,
# suspend, a clock jump) and go through catch-up instead.
LATE_GRACE = timedelta(seconds=5)
# The longest sleep: a bound on how long a wall-clock jump goes unnoticed.
MAX_SLEEP_SECONDS = 30.0
# How often a fenced node (engine/fencing.py) looks whether it may fire again.
FENCED_RETRY_SECONDS = 1.0
# Several nodes: how long a pause or resume on another node may go unnoticed
# here (each firing pass re-reads the paused tasks, one small SELECT).
PAUSE_REFRESH_SECONDS = 2.0
_COUNT_CAP = 10_000_000


@dataclass(slots=True)
class _Entry:
    """One scheduled task as the scheduler tracks it."""

    schedule: Schedule
    offset: timedelta  # the task's jitter offset
    last: datetime  # the newest tick fired or accounted for
    next: datetime | None  # the first tick after `last`; None: never fires again
    paused: bool = False

    @property
    def fire_at(self) -> datetime | None:
        return None if self.next is None else self.next + self.offset


def _missed_ticks(
    schedule: Schedule, after: datetime, until: datetime, keep: int
) -> tuple[int, datetime | None, list[datetime]]:
    """Return (how many, the first, the last `keep`) ticks in (after, until].

    Runs off the event loop: three days of an every-second task is 259,200 ticks.
    """
    count = count_ticks_between(schedule, after, until, cap=_COUNT_CAP)
    if count == 0:
        return 0, None, []
    ticks = ticks_between(schedule, after, until, limit=count)
    return count, ticks[0], ticks[-max(keep, 1) :]


class Scheduler:
    """Fire cron ticks for the engine's tasks."""

    def __init__(
        self,
        engine: Engine,
        store: RunStore,
        clock: Clock,
        *,
        claim_ticks: bool = False,
        paused_tasks: Callable[[], set[str]] | None = None,
    ) -> None:
        self._engine = engine
        # Several nodes: the paused tasks as stored, which any node may
        # change; read before each firing pass, so a pause holds everywhere.
        self._stored_paused = paused_tasks
        self._refresh_failed = False
        # Several nodes fire the same schedules (PostgreSQL): each tick is
        # claimed in the transaction that records its run, and a node that
        # finds it claimed passes over it (another node has its run).
        self._claim = claim_ticks
        self._store = store
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._paused: set[str] = set()
        # One firing pass at a time: two passes over the same entry would both
        # see its tick as due while the first is still committing the run.
        self._firing = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ----- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Load each task's last tick, fire run_on_start tasks, then start the loop."""
        states = await asyncio.to_thread(self._store.task_states)
        now = self._clock()
        self._paused = {name for name, state in states.items() if state.paused}
        first_seen = self._sync_entries(self._engine.tasks, states, now)
        if first_seen:
            await asyncio.to_thread(self._store.set_last_ticks, first_seen, now)
        for task in list(self._engine.tasks.values()):
            if task.run_on_start and task.name not in self._paused:
                await self._trigger(task.name, None, "Fired at daemon start (run_on_start = true).")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _sync_entries(
        self, tasks: Mapping[str, TaskDefinition], states: Mapping[str, object], now: datetime
    ) -> dict[str, datetime]:
        """Make the entries match `tasks`; return tasks seen for the first time (last = now)."""
        first_seen: dict[str, datetime] = {}
        entries: dict[str, _Entry] = {}
        for name, task in tasks.items():
            if task.schedule is None:
                continue
            old = self._entries.get(name)
            if old is not None:
                last = old.last
            else:
                state = states.get(name)
                stored = getattr(state, "last_tick", None)
                last = stored if isinstance(stored, datetime) else now
                if stored is None:
                    first_seen[name] = now
            entries[name] = _Entry(
                schedule=task.schedule,
                offset=jitter_offset(name, task.jitter),
                last=last,
                next=next_tick(task.schedule, last),
                paused=name in self._paused,
            )
        self._entries = entries
        return first_seen

    async def tasks_changed(self) -> None:
        """Follow a reload: new schedules start from now, changed ones keep their last tick."""
        now = self._clock()
        first_seen = self._sync_entries(self._engine.tasks, {}, now)
        if first_seen:
            await asyncio.to_thread(self._store.set_last_ticks, first_seen, now)
        self._wake.set()

    # ----- queries and controls --------------------------------------------

    def next_run_at(self, task_name: str) -> datetime | None:
        """Return when the task fires next; None when paused or unscheduled."""
        entry = self._entries.get(task_name)
        if entry is None or entry.paused:
            return None
        return entry.fire_at

    def is_paused(self, task_name: str) -> bool:
        return task_name in self._paused

    async def set_paused(self, task_name: str, paused: bool) -> None:
        """Pause or resume a task's schedule; the state survives restarts.

        Resuming starts from now: ticks that fell inside the pause are not missed.
        """
        now = self._clock()
        await asyncio.to_thread(self._store.set_paused, task_name, paused, now)
        if paused:
            self._paused.add(task_name)
        else:
            self._paused.discard(task_name)
        self._apply_pause(task_name, paused, now)
        self._wake.set()

    # ----- the loop ------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.fire_due(self._clock())
            except ShuttingDown:
                return
            except NodeFenced:
                # Its tick stays due: fired (or found fired by another node) once
                # the fence is lifted. Meanwhile the others fire it.
                await asyncio.sleep(FENCED_RETRY_SECONDS)
                continue
            except Exception:
                log.exception("scheduler step failed")
            self._wake.clear()
            delay = self._seconds_until_due(self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _seconds_until_due(self, now: datetime) -> float:
        longest = MAX_SLEEP_SECONDS if self._stored_paused is None else PAUSE_REFRESH_SECONDS
        due = [
            entry.fire_at
            for entry in self._entries.values()
            if not entry.paused and entry.fire_at is not None
        ]
        if not due:
            return longest
        return min(max((min(due) - now).total_seconds(), 0.0), longest)

    async def fire_due(self, now: datetime) -> None:
        """Fire every tick due at `now`: late ones as missed + catch-up, others as runs."""
        async with self._firing:
            if self._stored_paused is not None:
                await self._follow_stored_pauses(now)
            await self._fire_due(now)

    async def _follow_stored_pauses(self, now: datetime) -> None:
        """Take up the pauses and resumes other nodes stored since the last pass."""
        assert self._stored_paused is not None
        try:
            stored = await asyncio.to_thread(self._stored_paused)
        except Exception as error:
            # The firing that follows meets the same outage; say it once.
            if not self._refresh_failed:
                log.warning("could not read which tasks are paused: %s", error)
            self._refresh_failed = True
            return
        self._refresh_failed = False
        if stored == self._paused:
            return
        for name in stored ^ self._paused:
            self._apply_pause(name, name in stored, now)
        self._paused = set(stored)

    def _apply_pause(self, task_name: str, paused: bool, now: datetime) -> None:
        entry = self._entries.get(task_name)
        if entry is None:
            return
        entry.paused = paused
        if not paused:
            # As a resume here does: the ticks that fell in the pause are not missed.
            entry.last = max(entry.last, now)
            entry.next = next_tick(entry.schedule, entry.last)

    async def _fire_due(self, now: datetime) -> None:
        due = [
            name
            for name, entry in self._entries.items()
            if not entry.paused and entry.fire_at is not None and entry.fire_at <= now
        ]
        # Different tasks fire side by side: a thousand tasks on one tick must
        # not wait for each other's commits.
        await asyncio.gather(*(self._fire_task(name, now) for name in due))

    async def _fire_task(self, name: str, now: datetime) -> None:
        entry = self._entries[name]
        task = self._engine.tasks.get(name)
        if task is None:
            return
        missed_until = now - LATE_GRACE - entry.offset
        if entry.next is not None and entry.next <= missed_until:
            await self._catch_up(name, task, entry, missed_until)
        while entry.next is not None and entry.next + entry.offset <= now:
            tick = entry.next
            # Catch-up runs are late by design; only ticks fired on time tell
            # whether the scheduler keeps up.
            lag = (self._clock() - (tick + entry.offset)).total_seconds()
            if await self._trigger(name, tick, "", claim=self._claim):
                self._engine.observer.cron_fired(name, max(lag, 0.0))
            entry.last = tick
            entry.next = next_tick(entry.schedule, tick)

    async def _catch_up(
        self, name: str, task: TaskDefinition, entry: _Entry, until: datetime
    ) -> None:
        keep = task.max_catch_up_runs if task.catch_up is CatchUp.ALL else 1
        if self._claim:
            # Other nodes may have fired these ticks while this one lagged.
            states = await asyncio.to_thread(self._store.task_states)
            stored = getattr(states.get(name), "last_tick", None)
            if stored is not None and stored > entry.last:
                entry.last = stored
                entry.next = next_tick(entry.schedule, stored)
                if entry.next is None or entry.next > until:
                    return
        count, first, newest = await asyncio.to_thread(
            _missed_ticks, entry.schedule, entry.last, until, keep
        )
        if count == 0 or first is None:
            return
        last = newest[-1]
        try:
            missed = await self._engine.record_missed(name, count, first, last, claim=self._claim)
        except TickTaken:
            # Another node recorded these ticks (and their catch-up runs).
            entry.last = last
            entry.next = next_tick(entry.schedule, last)
            return
        catch_up_ticks = {CatchUp.LATEST: [last], CatchUp.ALL: newest}.get(task.catch_up, [])
        log.info(
            "task %s: %d missed tick%s (%s to %s) recorded as run %s; "
            "catch_up = %s: %d catch-up run%s",
            name,
            count,
            "" if count == 1 else "s",
            first.isoformat(),
            last.isoformat(),
            missed.id,
            task.catch_up.value,
            len(catch_up_ticks),
            "" if len(catch_up_ticks) == 1 else "s",
            extra={
                "task": name,
                "missed_ticks": count,
                "run_id": missed.id,
                "catch_up": task.catch_up.value,
                "catch_up_runs": len(catch_up_ticks),
            },
        )
        for tick in catch_up_ticks:
            await self._trigger(
                name, tick, f"Catch-up run for the missed tick at {tick.isoformat()}."
            )
        entry.last = last
        entry.next = next_tick(entry.schedule, last)

    async def _trigger(
        self, name: str, tick: datetime | None, note: str, *, claim: bool = False
    ) -> bool:
        """Fire one run; return False when another node had fired this tick."""
        try:
            await self._engine.trigger(
                name, {}, TriggeredBy.CRON, tick=tick, claim=claim, note=note
            )
        except TickTaken:
            return False
        except (ShuttingDown, NodeFenced):
            raise
        except RunyardError as error:
            # A tick that cannot become a run (a required param without a
            # default) is logged and passed over, not retried forever.
            log.error("task %s: scheduled run not started: %s", name, error)
        return True
