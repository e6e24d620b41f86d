"""The engine: admits triggers, queues them FIFO, runs them, records how they ended.

This is the facade the daemon and the API use; the parts live beside it:
`ledger` (who holds a slot), `queues` (lanes and retry delays), `executor`
(one run's process), `runs` (how runs are ended and retried), `recovery`
and `retention`. All state lives on one event loop; only the store is
touched from a thread (through the StoreWriter), so no locks are needed.

Why this module is over 450 lines: admission (`trigger`) and a run's life
from its start to its recorded end (`_supervise`, `_record_end`) both touch
every part at once (ledger, queues, writer, events, observer) and are kept
here, where that wiring is visible, rather than spread behind more objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from ulid import ULID

from runyard.domain.describe import describe_wait
from runyard.domain.models import (
    EXIT_NOT_RUN,
    EXIT_START_FAILED,
    EndReason,
    Run,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.domain.params import ParamError, resolve_params
from runyard.domain.policies import Admission, admit
from runyard.engine import run_log
from runyard.engine.admission import plan_trigger
from runyard.engine.events import EventHub
from runyard.engine.executor import ActiveRun, Executor, ProcessOutcome
from runyard.engine.health import DiskSpace, HealthMonitor, HealthReport
from runyard.engine.ledger import Ledger
from runyard.engine.observer import EngineObserver, NoObserver
from runyard.engine.process import use_pidfd_child_watcher
from runyard.engine.queues import RunQueues
from runyard.engine.recovery import crashed_ids, plan_recovery
from runyard.engine.retention import apply_retention, retention_forever
from runyard.engine.runs import (
    effective,
    ended_unrun,
    event_data,
    missed_run,
    retry_of,
    store_end,
)
from runyard.engine.start_log import STARTED_LOG, StartLog
from runyard.engine.timers import CallLater, loop_call_later
from runyard.engine.workspace import WORK_DIR, Workspace
from runyard.engine.writer import StoreWriter
from runyard.exceptions import (
    DiskFull,
    InputQueueFull,
    InvalidInput,
    NotFound,
    RunAlreadyEnded,
    ShuttingDown,
    StoreError,
    UnstorableInput,
)
from runyard.store._rows import dump_input
from runyard.store.files import LOGS_DIR
from runyard.store.inputs import INLINE_INPUT_BYTES, INPUTS_DIR, InputFiles
from runyard.store.logs import LogFollowers, LogWriter, delete_log
from runyard.store.runs import RunStore

log = logging.getLogger("runyard.engine")

DEFAULT_MAX_OUTPUT_SIZE = 10 * 1024 * 1024

# How long a caller's trigger waits for an unavailable database before it is
# answered 503 (and not recorded, ever): long enough to ride out a PostgreSQL
# restart or a SQLite lock held a few seconds, short of common client timeouts.
TRIGGER_WAIT_SECONDS = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class Engine:
    """Admission, queues, execution and recovery of runs."""

    def __init__(
        self,
        *,
        tasks: Mapping[str, TaskDefinition],
        store: RunStore,
        data_dir: Path,
        max_concurrent_runs: int,
        clock: Callable[[], datetime] = utc_now,
        base_environ: Mapping[str, str] = os.environ,
        retention_interval: float = 60.0,
        account_limits: Mapping[str, int | None] | None = None,
        max_output_size: int = DEFAULT_MAX_OUTPUT_SIZE,
        account_input_limits: Mapping[str, int | None] | None = None,
        call_later: CallLater = loop_call_later,
    ) -> None:
        self.tasks: dict[str, TaskDefinition] = dict(tasks)
        # v3 account id -> its max_queued_input in bytes (None: no account cap).
        self.account_input_limits: dict[str, int | None] = dict(account_input_limits or {})
        self.workspace = Workspace(data_dir / WORK_DIR)
        self.inputs = InputFiles(data_dir / INPUTS_DIR)
        self.followers = LogFollowers()
        self.events = EventHub()
        # Told of run ends, cron lag, missed ticks and commit times (the metrics).
        self.observer: EngineObserver = NoObserver()
        self._store = store
        self._logs_dir = data_dir / LOGS_DIR
        self._clock = clock
        self._retention_interval = retention_interval
        self._writer = StoreWriter(store, on_commit=self._store_written)
        self._disk = DiskSpace(data_dir)
        self._health = HealthMonitor(store.ping, self._writer, self._disk)
        self._started = StartLog(data_dir / STARTED_LOG, lambda: list(self._active))
        self._queues = RunQueues(clock=clock, on_due=self._pump, call_later=call_later)
        self._ledger = Ledger(
            self._queues, max_concurrent_runs=max_concurrent_runs, account_limits=account_limits
        )
        self._executor = Executor(
            workspace=self.workspace,
            inputs=self.inputs,
            followers=self.followers,
            base_environ=base_environ,
            clock=clock,
            max_output_size=max_output_size,
            call_later=call_later,
        )
        self._active: dict[str, ActiveRun] = {}
        self._executions: set[asyncio.Task[None]] = set()
        self._end_waiters: dict[str, list[asyncio.Future[Run]]] = {}
        # Runs whose process is gone and whose end is being recorded.
        self._ending: dict[str, Run] = {}
        self._accepting = False
        self._stopping = False
        self._retention_task: asyncio.Task[None] | None = None

    @property
    def max_concurrent_runs(self) -> int:
        return self._ledger.max_concurrent_runs

    @property
    def account_limits(self) -> dict[str, int | None]:
        """v3 account id -> its max_concurrent_runs (None: no account limit)."""
        return self._ledger.account_limits

    @property
    def max_output_size(self) -> int:
        return self._executor.max_output_size

    @max_output_size.setter
    def max_output_size(self, size: int) -> None:
        self._executor.max_output_size = size

    # ----- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Recover what a previous daemon left behind, then begin dispatching."""
        use_pidfd_child_watcher()
        self._writer.start()
        await self._recover()
        self._accepting = True
        self._retention_task = asyncio.get_running_loop().create_task(
            retention_forever(self._retention_interval, self.apply_retention)
        )
        self._pump()

    async def shutdown(self, timeout: float) -> None:
        """Stop every running run gracefully within `timeout` seconds; pending runs stay pending."""
        self._accepting = False
        self._stopping = True
        self._executor.stopping = True
        if self._retention_task is not None:
            self._retention_task.cancel()
        self._queues.clear()
        for active in list(self._active.values()):
            active.daemon_stopping = True
            self._executor.terminate(active)
        if self._executions:
            _done, still = await asyncio.wait(self._executions, timeout=timeout)
            if still:
                for active in self._active.values():
                    if active.child is not None:
                        active.child.signal_group(signal.SIGKILL)
                await asyncio.wait(still, timeout=10)
        # Its thread must not make directories while the caller removes the data dir.
        await self._executor.wait_for_upkeep()
        await self._writer.close()
        self._health.close()
        self._started.close()
        self.events.close()

    # ----- queries ---------------------------------------------------------

    async def health(self) -> HealthReport:
        """Return whether runs can be recorded now: the database answers, the disk has room."""
        return await self._health.check()

    def log_path(self, run_id: str) -> Path:
        # ULIDs start with their timestamp: six characters make buckets of ~3 days,
        # so no directory ever holds millions of files.
        return Path(f"{self._logs_dir}/{run_id[:6]}/{run_id}.log")

    def _store_written(self, seconds: float) -> None:
        # The observer is attached after the writer is made; look it up each time.
        self.observer.store_written(seconds)

    def counts(self, task_name: str) -> tuple[int, int]:
        """Return (running, queued) runs of a task."""
        return self._ledger.running_of_task(task_name), self._queues.waiting(task_name)

    def account_counts(self, account: str) -> tuple[int, int]:
        """Return (running, queued) runs a v3 account triggered, here."""
        return self._ledger.running_of_account(account), self._queues.waiting_of_account(account)

    def live_run(self, run_id: str) -> Run | None:
        """Return the in-memory state of a running run, if it is running here."""
        active = self._active.get(run_id)
        return active.run if active else None

    def is_started(self, run_id: str) -> bool:
        """Return whether the run holds a slot here (started, or starting now)."""
        return run_id in self._active

    async def live_output(self, run_id: str) -> dict[str, list[list[str]]] | None:
        """Return what a running run has written so far, or None if it is not running here."""
        if run_id not in self._active:
            return None
        return await self._executor.read_output(run_id)

    async def wait_for_end(self, run_id: str, timeout: float) -> Run | None:
        """Wait up to `timeout` seconds for the run to end; return it, or None on timeout."""
        # Register before looking: a run that ends while the store is read still wakes us.
        future: asyncio.Future[Run] = asyncio.get_running_loop().create_future()
        self._end_waiters.setdefault(run_id, []).append(future)
        try:
            run = await asyncio.to_thread(self._store.get_run, run_id)
            if run is None:
                raise NotFound("run", run_id)
            if run.status is RunStatus.ENDED:
                return run
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._end_waiters.get(run_id)
            if waiters and future in waiters:
                waiters.remove(future)

    # ----- triggers --------------------------------------------------------

    async def trigger(
        self,
        task_name: str,
        params: Mapping[str, object],
        triggered_by: TriggeredBy,
        input_data: list[list[list[str]]] | None = None,
        *,
        tick: datetime | None = None,
        note: str = "",
        account: str | None = None,
        secret_hash: str | None = None,
        run_id: str | None = None,
        input_size: int | None = None,
    ) -> list[Run]:
        """Admit one trigger (one run per replica) and return the runs as recorded.

        A cron trigger passes its `tick`: it is recorded as fired in the same
        transaction as the runs. `note` is added to the runs' descriptions. A
        v3 trigger passes its `account`, whose concurrency limit then applies,
        the hash of the viewer link's password, and the id of the first run
        (the password names it, so it is chosen before the run exists).

        Input data comes as `input_data` (tables), or, when a worker process
        already wrote it to the input files of run `run_id`, as `input_size`
        (bytes of JSON). Tables from INLINE_INPUT_BYTES up are written to the
        run's input files here; either way the queued run holds no large
        input in memory. A trigger that would pass a `max_queued_input` cap
        is refused with InputQueueFull, and nothing is recorded.
        """
        task = self.tasks.get(task_name)
        if task is None:
            raise NotFound("task", task_name)
        if not self._accepting:
            raise ShuttingDown("runyard is shutting down")
        if tick is None:
            # A caller is told at once; a cron tick is the daemon's own and is
            # recorded whenever the store can take it.
            try:
                self._disk.refuse_if_full()
            except DiskFull as error:
                self._signal_disk_full(task_name, error)
                raise
        try:
            values = resolve_params(task.params, params)
        except ParamError as error:
            invalid = UnstorableInput if error.unstorable else InvalidInput
            raise invalid(f"body.params.{error.name}", error.message, error.value) from error
        inline = input_data
        if input_data is not None:
            # surrogatepass: only a count; text no store takes is refused where it is stored.
            input_size = len(dump_input(input_data).encode("utf-8", "surrogatepass"))
            if input_size >= INLINE_INPUT_BYTES:
                inline = None
        if input_size is not None and admit(
            effective(task), self._ledger.load(task.name, account)
        ) is (Admission.QUEUE):
            refusal = self._queues.inputs.refusal(
                task, account, self.account_input_limits.get(account or ""), input_size
            )
            if refusal is not None:
                raise InputQueueFull(refusal)
        if run_id is None:
            run_id = str(ULID())
        ids = [run_id] + [str(ULID()) for _ in range(task.replicas - 1)]
        in_file = input_size is not None and inline is None
        if in_file:
            try:
                await asyncio.to_thread(self._stage_input_files, ids, input_data)
            except UnicodeError as error:  # callers check text at the boundary; defence in depth
                await asyncio.to_thread(self._delete_input_files, ids)
                raise StoreError(f"input data cannot be stored: {error}") from error
        try:
            return await self._admit(
                task,
                ids,
                values,
                triggered_by,
                inline,
                input_size,
                tick,
                note,
                account,
                secret_hash,
            )
        except BaseException:
            if in_file:
                # Not recorded: its input files belong to nobody.
                await asyncio.to_thread(self._delete_input_files, ids)
            raise

    def _stage_input_files(self, ids: list[str], tables: list[list[list[str]]] | None) -> None:
        """Write (unless a worker did) and link the input files of one trigger's runs."""
        if tables is not None:
            self.inputs.write(ids[0], tables)
        for replica_id in ids[1:]:
            self.inputs.link(ids[0], replica_id)

    def _delete_input_files(self, ids: list[str]) -> None:
        for run_id in ids:
            self.inputs.delete(run_id)

    async def _admit(
        self,
        task: TaskDefinition,
        ids: list[str],
        values: dict[str, str],
        triggered_by: TriggeredBy,
        input_data: list[list[list[str]]] | None,
        input_size: int | None,
        tick: datetime | None,
        note: str,
        account: str | None,
        secret_hash: str | None,
    ) -> list[Run]:
        # Places are held until the insert is answered, whatever the answer; on
        # success the queue holds the runs by then.
        with self._ledger.reserve(task.name, account) as reservation:
            plan = plan_trigger(
                task,
                ids,
                self._ledger,
                reservation,
                self._clock,
                values=values,
                triggered_by=triggered_by,
                input_data=input_data,
                input_size=input_size,
                note=note,
                account=account,
                secret_hash=secret_hash,
            )
            runs, queued = plan.runs, plan.pending
            to_kill = self._oldest_running(task.name, plan.kills)
            for run in queued:
                self._queues.inputs.add(run)
            try:
                # Urgent: whoever triggered is waiting for the commit to be answered.
                # A caller waits TRIGGER_WAIT_SECONDS at most for an unavailable
                # database; a cron tick waits as long as it takes.
                await self._writer.write(
                    inserts=runs,
                    ticks={task.name: tick} if tick is not None else None,
                    urgent=True,
                    give_up_after=TRIGGER_WAIT_SECONDS if tick is None else None,
                )
            except DiskFull as error:
                for run in queued:
                    self._queues.inputs.remove(run)
                self._signal_disk_full(task.name, error)
                raise
            except BaseException:
                for run in queued:
                    self._queues.inputs.remove(run)
                raise
        for run in runs:
            self.events.publish("run.created", event_data(run))
            if run.status is RunStatus.ENDED:
                self._announce_end(run)
        self._queues.enqueue(*queued)
        for active in to_kill:
            active.stop_requested = True
            self._executor.terminate(active)
        self._pump()
        return runs

    async def replace_tasks(self, tasks: Mapping[str, TaskDefinition]) -> list[Run]:
        """Swap in a reloaded set of tasks; return the runs ended because their task went away.

        Runs in flight keep the definition they started with; queued runs of a
        task that still exists start with its new definition.
        """
        removed = set(self.tasks) - set(tasks)
        self.tasks = dict(tasks)
        ended: list[Run] = []
        for name in removed:
            ended.extend(
                self._ended_unrun(
                    run,
                    EndReason.SKIPPED,
                    f"Task {name!r} was removed from the config by a reload.",
                )
                for run in self._queues.drop_task(name)
            )
        if ended:
            await self._writer.write(updates=ended)
            for run in ended:
                self._finish(run)
        self._pump()
        return ended

    def set_limits(
        self,
        max_concurrent_runs: int,
        account_limits: Mapping[str, int | None],
        account_input_limits: Mapping[str, int | None] | None = None,
    ) -> None:
        """Apply reloaded concurrency limits; raised limits start queued runs at once."""
        self._ledger.set_limits(max_concurrent_runs, account_limits)
        if account_input_limits is not None:
            self.account_input_limits = dict(account_input_limits)
        self._pump()

    async def record_missed(
        self, task_name: str, count: int, first: datetime, last: datetime
    ) -> Run:
        """Record one `missed` run for `count` ticks that did not fire; mark `last` handled."""
        missed = missed_run(task_name, count, first, last, self._clock)
        await self._writer.write(inserts=[missed], ticks={task_name: last})
        self.events.publish("run.created", event_data(missed))
        self.events.publish("run.ended", event_data(missed))
        self.observer.ticks_missed(task_name, count)
        self.observer.run_ended(missed)
        return missed

    async def stop(self, run_id: str) -> Run:
        """Stop a run: signal it if running, end it as stopped if still waiting."""
        active = self._active.get(run_id)
        if active is not None:
            active.stop_requested = True
            self._executor.terminate(active)
            return active.run
        ending = self._ending.get(run_id)
        if ending is not None:
            raise RunAlreadyEnded(ending)
        waiting = self._queues.take(run_id)
        if waiting is not None:
            ended = self._ended_unrun(
                waiting, EndReason.STOPPED, "Stopped on request before it started."
            )
            self._ending[run_id] = ended
            try:
                # The caller waits for an unavailable database as long as a
                # trigger would; then the run goes back to its place and waits on.
                await self._writer.write(
                    updates=[ended], urgent=True, give_up_after=TRIGGER_WAIT_SECONDS
                )
            except StoreError:
                self._put_back(waiting)
                raise
            finally:
                self._ending.pop(run_id, None)
            self._finish(ended)
            return ended
        run = await asyncio.to_thread(self._store.get_run, run_id)
        if run is None:
            raise NotFound("run", run_id)
        raise RunAlreadyEnded(run)

    # ----- admission helpers -------------------------------------------------

    def _oldest_running(self, task_name: str, count: int) -> list[ActiveRun]:
        """The `count` oldest running runs of a task not asked to stop yet."""
        if not count:
            return []
        candidates = [
            active
            for active in self._active.values()
            if active.run.task_name == task_name and not active.stop_requested
        ]
        candidates.sort(
            key=lambda active: (active.run.start_at or active.run.created_at, active.run.id)
        )
        return candidates[:count]

    def _ended_unrun(self, run: Run, reason: EndReason, detail: str) -> Run:
        """Return `run` ended without ever having a process."""
        return ended_unrun(run, reason, detail, self._clock())

    def _put_back(self, run: Run) -> None:
        """Return a run taken from its queue (or its retry delay) to its place."""
        if self._stopping:
            return  # it is pending in the store: the next daemon queues it
        self._queues.put_back(run)

    def _may_start(self, task_name: str, account: str | None) -> bool:
        task = self.tasks.get(task_name)
        return task is not None and self._ledger.may_start(effective(task), account)

    def _pump(self) -> None:
        """Start queued runs, oldest first, while slots are free."""
        if not self._accepting:
            return
        ledger, queues = self._ledger, self._queues
        while ledger.has_free_slot():
            pick = queues.next_startable(self._may_start)
            if pick is None:
                return
            active = ActiveRun(run=pick, task=self.tasks[pick.task_name])
            self._active[pick.id] = active
            ledger.occupy(pick)
            execution = asyncio.get_running_loop().create_task(self._execute(active))
            self._executions.add(execution)
            execution.add_done_callback(self._executions.discard)

    # ----- execution ---------------------------------------------------------

    async def _execute(self, active: ActiveRun) -> None:
        try:
            await self._supervise(active)
        finally:
            # Whatever failed in there, the slot is given back (once: normally
            # it already was, before the end was recorded).
            self._release(active)

    async def _supervise(self, active: ActiveRun) -> None:
        task = active.task
        now = self._clock()
        waited = describe_wait(active.run.created_at, now, active.run.not_before)
        description = "\n".join(filter(None, [active.run.description, waited]))
        active.run = dataclasses.replace(
            active.run, status=RunStatus.RUNNING, start_at=now, description=description
        )
        if active.daemon_stopping:
            # Shutdown began before a process existed: the run stays pending and
            # the next daemon starts it, as it does every pending run.
            self._release(active)
            return
        # Not awaited: the start log below, written before the process exists,
        # is what tells a restarted daemon that this run had started.
        self._writer.submit(updates=[active.run]).add_done_callback(_log_write_failure)
        self.events.publish("run.started", event_data(active.run))
        run_log.run_started(active.run)
        writer = LogWriter(self.log_path(active.run.id), task.log_max_size, task.log_on_full)
        try:
            if active.stop_requested:
                outcome = ProcessOutcome(EXIT_NOT_RUN, EndReason.STOPPED)
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
        retry = retry_of(finished, task, self._clock())
        self._ending[finished.id] = finished
        self._release(active)
        if active.child is not None:
            finished = await self._executor.kill_leftovers(finished)
        if retry is not None and retry.input_in_file:
            retry = await self._link_retry_input(finished, retry)
        try:
            finished, retry = await store_end(self._writer, finished, retry)
        except Exception:
            # Left running in the store: the next start ends it crashed (start log).
            log.exception("could not record the end of run %s", finished.id)
            return
        finally:
            self._ending.pop(finished.id, None)
        self._finish(finished)
        if retry is not None:
            self.events.publish("run.created", event_data(retry))
            self._schedule(retry)

    def _release(self, active: ActiveRun) -> None:
        if self._active.get(active.run.id) is not active:
            return  # released already
        del self._active[active.run.id]
        self._ledger.vacate(active.run)
        self._pump()

    def _signal_disk_full(self, task_name: str, error: DiskFull) -> None:
        # Not a run event (no run was recorded): listeners only, not /api/events.
        self.events.signal("disk_full", {"task_name": task_name, "detail": str(error)})

    def _announce_end(self, ended: Run) -> None:
        self.events.publish("run.ended", event_data(ended))
        run_log.run_ended(ended)
        self.observer.run_ended(ended)

    def _finish(self, ended: Run) -> None:
        self._announce_end(ended)
        for waiter in self._end_waiters.pop(ended.id, []):
            if not waiter.done():
                waiter.set_result(ended)

    # ----- retries -----------------------------------------------------------

    async def _link_retry_input(self, ended: Run, retry: Run) -> Run:
        """Give a retry the input files of the run it retries (hard links, not copies)."""
        try:
            await asyncio.to_thread(self.inputs.link, ended.id, retry.id)
        except OSError as error:
            log.error("run %s: could not link its input to retry %s: %s", ended.id, retry.id, error)
            note = f"runyard could not give this retry the input data of run {ended.id}: {error}."
            return dataclasses.replace(retry, description=f"{retry.description}\n{note}")
        return retry

    def _schedule(self, run: Run) -> None:
        """Queue a pending run now, or when its not_before comes."""
        if self._stopping:
            return  # it stays pending in the store and is scheduled again at the next start
        self._queues.schedule(run)

    # ----- recovery and retention --------------------------------------------

    async def _recover(self) -> None:
        """End runs a dead daemon left running (crashed) and requeue pending ones."""
        leftovers = await asyncio.to_thread(self._store.active_runs)
        started = await asyncio.to_thread(self._started.leftovers)
        crashed = crashed_ids(leftovers, started)
        strays = await asyncio.to_thread(self._executor.strays.table.kill_runs, crashed)
        plan = plan_recovery(leftovers, crashed, strays, self.tasks, self._clock())
        for crashed_run, retry in plan.retried:
            plan.replace_retry(retry, await self._link_retry_input(crashed_run, retry))
        # No run has a process now: workspaces left behind belong to nobody (a
        # crashed run's output is not kept: which spare it wrote into was in memory).
        await asyncio.to_thread(self.workspace.remove_except, ())
        await asyncio.to_thread(self.workspace.fill_spares)
        self._started.open()
        if plan.updates or plan.inserts:
            await self._writer.write(inserts=plan.inserts, updates=plan.updates)
            for ended in plan.updates:
                self._announce_end(ended)
        self._accepting = True
        for run in plan.pending:
            self._schedule(run)

    def _delete_run_files(self, run_id: str) -> None:
        delete_log(self.log_path(run_id))
        self.inputs.delete(run_id)

    async def apply_retention(self) -> int:
        """Delete ended runs (rows and log files) beyond keep_runs / older than keep_for."""
        return await apply_retention(
            self._store, list(self.tasks.values()), self._clock(), self._delete_run_files
        )


def _log_write_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not record a run change", exc_info=future.exception())
