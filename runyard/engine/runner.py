"""Runs from their queue to their recorded end: slots, processes, ends, retries."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from runyard.domain.models import (
    EXIT_NOT_RUN,
    EXIT_START_FAILED,
    EndReason,
    Run,
    TaskDefinition,
)
from runyard.engine import run_log
from runyard.engine.events import EventHub
from runyard.engine.executor import ActiveRun, Executor, ProcessOutcome
from runyard.engine.ledger import Ledger
from runyard.engine.observer import EngineObserver, NoObserver
from runyard.engine.queues import RunQueues
from runyard.engine.runs import effective, event_data, retry_of, running_form, store_end
from runyard.engine.start_log import StartLog
from runyard.engine.writer import StoreWriter
from runyard.exceptions import LeaseLost, StoreError
from runyard.store.claims import Claim, StartLimits
from runyard.store.inputs import InputFiles
from runyard.store.logs import LogWriter

log = logging.getLogger("runyard.engine")

# Several nodes: how soon a lane whose claim had to wait (a limit full on
# another node, an older run waiting there) is tried again at the latest. A
# run of the task ending or starting on any node (store/notices.py) tries it
# at once; this covers a notification lost with its connection.
CLAIM_RETRY_SECONDS = 1.0


class Runner:
    """Starts queued runs while slots are free and sees each one to its recorded end.

    A run holds its slot (in `active` and the ledger) from the moment it
    leaves its queue until its process is gone; its end is then recorded
    (`ending` holds it meanwhile), announced, and retried if its task says so.
    """

    def __init__(
        self,
        *,
        tasks: dict[str, TaskDefinition],
        ledger: Ledger,
        queues: RunQueues,
        executor: Executor,
        writer: StoreWriter,
        started: StartLog,
        events: EventHub,
        inputs: InputFiles,
        clock: Callable[[], datetime],
        log_path: Callable[[str], Path],
        claims: bool = False,
    ) -> None:
        self.tasks = tasks
        # Several nodes: each start is claimed in the shared database first,
        # so a task's and an account's limits and FIFO hold cluster-wide.
        self.claims = claims
        # Lanes (task, account) whose last claim had to wait, and the timer
        # that lets them try again.
        self.blocked: set[tuple[str, str | None]] = set()
        self._unblock_timer: asyncio.TimerHandle | None = None
        # Told of run ends, cron lag, missed ticks and commit times (the metrics).
        self.observer: EngineObserver = NoObserver()
        self.active: dict[str, ActiveRun] = {}
        self.executions: set[asyncio.Task[None]] = set()
        self.end_waiters: dict[str, list[asyncio.Future[Run]]] = {}
        # Runs whose process is gone and whose end is being recorded.
        self.ending: dict[str, Run] = {}
        self.accepting = False  # runs start only once recovery is done
        self.stopping = False  # the daemon stops: nothing more is queued or started
        # The node cannot renew its lease (engine/fencing.py): nothing is queued
        # or started, and the runs it killed wait in `fenced_runs` to be recorded.
        self.fenced = False
        self.fenced_runs: list[Run] = []
        self._ledger = ledger
        self._queues = queues
        self._executor = executor
        self._writer = writer
        self._started = started
        self._events = events
        self._inputs = inputs
        self._clock = clock
        self._log_path = log_path

    def oldest_running(self, task_name: str, count: int) -> list[ActiveRun]:
        """The `count` oldest running runs of a task not asked to stop yet."""
        if not count:
            return []
        candidates = [
            active
            for active in self.active.values()
            if active.run.task_name == task_name and not active.stop_requested
        ]
        candidates.sort(
            key=lambda active: (active.run.start_at or active.run.created_at, active.run.id)
        )
        return candidates[:count]

    def put_back(self, run: Run) -> None:
        """Return a run taken from its queue (or its retry delay) to its place."""
        if self.stopping or self.fenced:
            return  # it is pending in the store: the next daemon (or the fence's end) queues it
        self._queues.put_back(run)

    def _may_start(self, task_name: str, account: str | None) -> bool:
        if self.blocked and (task_name, account) in self.blocked:
            return False
        task = self.tasks.get(task_name)
        return task is not None and self._ledger.may_start(effective(task), account)

    def pump(self) -> None:
        """Start queued runs, oldest first, while slots are free."""
        if not self.accepting:
            return
        ledger, queues = self._ledger, self._queues
        while ledger.has_free_slot():
            pick = queues.next_startable(self._may_start)
            if pick is None:
                return
            if pick.id in self.active:
                # A second copy (several nodes: taken back from a node that had
                # taken it from here): the run is starting already.
                continue
            self._launch(ActiveRun(run=pick, task=self.tasks[pick.task_name]))

    def start_claimed(self, run: Run) -> None:
        """Start the process of a run whose start was claimed with its trigger (several nodes).

        `run` is in its running form, as stored. Its trigger held its slot
        until now (Ledger.reserve), so the slot is free.
        """
        active = ActiveRun(run=run, task=self.tasks[run.task_name])
        if self.fenced:
            # Killed by the fence before it began: recorded when the fence is lifted.
            self.fenced_runs.append(run)
            return
        active.daemon_stopping = self.stopping
        self._launch(active, claimed=True)

    def _launch(self, active: ActiveRun, *, claimed: bool = False) -> None:
        self.active[active.run.id] = active
        self._ledger.occupy(active.run)
        execution = asyncio.get_running_loop().create_task(self._execute(active, claimed))
        self.executions.add(execution)
        execution.add_done_callback(self.executions.discard)

    async def _execute(self, active: ActiveRun, claimed: bool = False) -> None:
        try:
            await self._supervise(active, claimed)
        finally:
            # Whatever failed in there, the slot is given back (once: normally
            # it already was, before the end was recorded).
            self._release(active)

    async def _supervise(self, active: ActiveRun, claimed: bool = False) -> None:
        """See one run from its queue to its recorded end; `claimed`: it is stored running."""
        task = active.task
        pending = active.run
        if not claimed:
            active.run = running_form(active.run, self._clock())
        if active.daemon_stopping and not claimed:
            # Shutdown began before a process existed: the run stays pending and
            # the next daemon starts it, as it does every pending run.
            self._release(active)
            return
        if self.claims and not claimed:  # (a run `claimed` was started with its trigger)
            claim = await self._claim(active)
            if claim is not Claim.GRANTED:
                self._unclaimed(active, pending, claim)
                return
        elif not self.claims:
            # Not awaited: the start log below, written before the process exists,
            # is what tells a restarted daemon that this run had started.
            self._writer.submit(updates=[active.run]).add_done_callback(_log_write_failure)
        self._events.publish("run.started", event_data(active.run))
        run_log.run_started(active.run)
        writer = LogWriter(self._log_path(active.run.id), task.log_max_size, task.log_on_full)
        try:
            if active.stop_requested:
                outcome = ProcessOutcome(EXIT_NOT_RUN, EndReason.STOPPED)
            elif active.daemon_stopping:
                # Claimed with its trigger as shutdown began: it ends without a process.
                outcome = ProcessOutcome(EXIT_NOT_RUN, EndReason.DAEMON_STOPPED)
            else:
                self._started.record(active.run.id)
                outcome = await self._executor.run(active, writer)
        except Exception as error:  # noqa: BLE001 - a run must always end with a reason
            log.exception("run %s failed inside runyard", active.run.id)
            outcome = ProcessOutcome(
                EXIT_START_FAILED, EndReason.START_FAILED, f"runyard error: {error}"
            )
        finally:
            self._executor.close_log(writer, active.run.id)
        finished = await self._executor.conclude(active.run, writer, outcome)
        if active.fenced:
            # Killed by the fence: whoever holds the lease next records its end.
            self.fenced_runs.append(active.run)
            self._release(active)
            return
        retry = retry_of(finished, task, self._clock())
        self.ending[finished.id] = finished
        self._release(active)
        if active.child is not None:
            finished = await self._executor.kill_leftovers(finished)
        if retry is not None and retry.input_in_file:
            retry = await self.link_retry_input(finished, retry)
        try:
            finished, retry = await store_end(self._writer, finished, retry)
            if self.claims:
                self.unblock({finished.task_name})  # its end is stored: a place is free
        except LeaseLost:
            # Another node took this one over and recorded the run (crashed, retried).
            log.warning("run %s: its end was not recorded: this node lost its lease", finished.id)
            return
        except Exception:
            # Left running in the store: the next start ends it crashed (start log).
            log.exception("could not record the end of run %s", finished.id)
            return
        finally:
            self.ending.pop(finished.id, None)
        self.finish(finished)
        if retry is not None:
            self._events.publish("run.created", event_data(retry))
            self.schedule(retry)

    async def _claim(self, active: ActiveRun) -> Claim:
        """Claim the start of `active` in the shared database (several nodes)."""
        run = active.run
        task = effective(active.task)
        accounts = (
            {} if run.account is None else {run.account: self._ledger.account_limit(run.account)}
        )
        try:
            claimed = await self._writer.claim(
                [run], StartLimits({task.name: task.max_concurrent}, accounts)
            )
        except LeaseLost:
            return Claim.GONE  # another node took this one over, and the run with it
        except StoreError as error:
            log.error("run %s: could not claim its start: %s", run.id, error)
            return Claim.WAIT
        return claimed.get(run.id, Claim.WAIT)

    def _unclaimed(self, active: ActiveRun, pending: Run, claim: Claim) -> None:
        """Give back the slot of a run whose claim did not start it: to wait, or gone."""
        active.run = pending
        if claim is Claim.WAIT:
            self.block(pending)
            self.put_back(pending)
        else:
            log.info("run %s: another node took it, or it ended, while it waited here", pending.id)
        self._release(active)

    def block(self, run: Run) -> None:
        """Hold back the lane of `run`, whose claim had to wait, until a run of its task moves."""
        self.blocked.add((run.task_name, run.account))
        if self._unblock_timer is None:
            self._unblock_timer = asyncio.get_running_loop().call_later(
                CLAIM_RETRY_SECONDS, self._retry_blocked
            )

    def unblock(self, task_names: set[str] | None) -> None:
        """Let the blocked lanes of these tasks (None: all) claim again, and start what may."""
        if not self.blocked:
            return
        if task_names is None:
            self.blocked.clear()
        else:
            self.blocked = {lane for lane in self.blocked if lane[0] not in task_names}
        self.pump()

    def _retry_blocked(self) -> None:
        self._unblock_timer = None
        self.unblock(None)

    def _release(self, active: ActiveRun) -> None:
        if self.active.get(active.run.id) is not active:
            return  # released already
        del self.active[active.run.id]
        self._ledger.vacate(active.run)
        self.pump()

    def announce_end(self, ended: Run) -> None:
        self._events.publish("run.ended", event_data(ended))
        run_log.run_ended(ended)
        self.observer.run_ended(ended)

    def finish(self, ended: Run) -> None:
        self.announce_end(ended)
        for waiter in self.end_waiters.pop(ended.id, []):
            if not waiter.done():
                waiter.set_result(ended)

    async def link_retry_input(self, ended: Run, retry: Run) -> Run:
        """Give a retry the input files of the run it retries (hard links, not copies)."""
        try:
            await asyncio.to_thread(self._inputs.link, ended.id, retry.id)
        except OSError as error:
            log.error("run %s: could not link its input to retry %s: %s", ended.id, retry.id, error)
            note = f"runyard could not give this retry the input data of run {ended.id}: {error}."
            return dataclasses.replace(retry, description=f"{retry.description}\n{note}")
        return retry

    def schedule(self, run: Run) -> None:
        """Queue a pending run now, or when its not_before comes."""
        if self.stopping or self.fenced:
            # It stays pending in the store: scheduled again at the next start,
            # when the fence is lifted, or by the node that takes this one over.
            return
        self._queues.schedule(run)


def _log_write_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not record a run change", exc_info=future.exception())
