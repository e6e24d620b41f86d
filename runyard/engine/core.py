"""The engine: admits triggers, queues them FIFO, runs them, records how they ended.

This is the facade the daemon and the API use; the parts live beside it:
`ledger` (who holds a slot), `queues` (lanes and retry delays), `admission`
(one trigger's runs), `runner` (a run from its queue to its recorded end),
`executor` (one run's process), `runs` (how runs end and retry), `recovery`
and `retention`. All state lives on one event loop; only the store is
touched from a thread (through the StoreWriter), so no locks are needed.

Why this module is over 450 lines: it is the one entry point for every
engine operation (some twenty public methods and properties), and it keeps
the I/O around the pure parts of admission, stop, recovery and reload:
writing input files, waiting for the store, publishing what was recorded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from ulid import ULID

from runyard.clock import utc_now as utc_now  # re-exported: the clock's home is runyard.clock
from runyard.domain.input_data import input_json
from runyard.domain.models import (
    EndReason,
    Run,
    RunKind,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.domain.output_data import DEFAULT_MAX_OUTPUT_SIZE
from runyard.domain.params import ParamError, resolve_params
from runyard.domain.policies import Admission, admit
from runyard.engine.admission import (
    TriggerPlan,
    TriggerRequest,
    cluster_admission,
    delete_input_files,
    plan_trigger,
    stage_input_files,
)
from runyard.engine.events import EventHub
from runyard.engine.executor import Executor
from runyard.engine.fencing import Fencing
from runyard.engine.health import DiskSpace, HealthMonitor, HealthReport, with_lease
from runyard.engine.idle_memory import IdleMemory
from runyard.engine.ledger import Ledger
from runyard.engine.log_follow import LogFollowers
from runyard.engine.observer import EngineObserver
from runyard.engine.process import use_pidfd_child_watcher
from runyard.engine.queues import RunQueues
from runyard.engine.recorder import RunRecorder
from runyard.engine.recovery import crashed_ids, plan_recovery
from runyard.engine.retention import apply_retention, keep_rules, retention_forever
from runyard.engine.runner import Runner
from runyard.engine.runs import (
    effective,
    ended_unrun,
    event_data,
    missed_run,
)
from runyard.engine.sharing import QueueSharing
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
    RunOnAnotherNode,
    ServiceLifetimeStop,
    ShuttingDown,
    StoreError,
    UnstorableInput,
)
from runyard.store.claims import Claim, StartLimits
from runyard.store.files import LOGS_DIR
from runyard.store.inputs import INLINE_INPUT_BYTES, INPUTS_DIR, InputFiles
from runyard.store.logs import delete_log
from runyard.store.notices import LaneListener
from runyard.store.runs import RunStore

log = logging.getLogger("runyard.engine")

# How long a caller's trigger waits for an unavailable database before it is
# answered 503 (and not recorded, ever): long enough to ride out a PostgreSQL
# restart or a SQLite lock held a few seconds, short of common client timeouts.
TRIGGER_WAIT_SECONDS = 5.0


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
        node: str | None = None,
        own_runs: Callable[[], list[Run]] | None = None,
    ) -> None:
        # This daemon's node name where several share a PostgreSQL (stamped on
        # its runs), and how it finds its own unfinished runs at start (the
        # node registry); None on SQLite: every active run is this daemon's.
        self.node = node
        self._own_runs = own_runs or store.active_runs
        # v3 account id -> its max_queued_input in bytes (None: no account cap).
        self.account_input_limits: dict[str, int | None] = dict(account_input_limits or {})
        self.workspace = Workspace(data_dir / WORK_DIR)
        self.inputs = InputFiles(data_dir / INPUTS_DIR)
        self.followers = LogFollowers()
        self.events = EventHub()
        self._store = store
        self._logs_dir = data_dir / LOGS_DIR
        self._clock = clock
        self._retention_interval = retention_interval
        self._writer = StoreWriter(store, on_commit=self._store_written)
        self._disk = DiskSpace(data_dir)
        self._health = HealthMonitor(store.ping, self._writer, self._disk)
        self._started = StartLog(data_dir / STARTED_LOG, lambda: list(self._runner.active))
        self._queues = RunQueues(clock=clock, on_due=self._due, call_later=call_later)
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
        self._runner = Runner(
            tasks=dict(tasks),
            ledger=self._ledger,
            queues=self._queues,
            executor=self._executor,
            writer=self._writer,
            started=self._started,
            events=self.events,
            inputs=self.inputs,
            clock=clock,
            log_path=self.log_path,
        )
        self._retention_task: asyncio.Task[None] | None = None
        self._sharing: QueueSharing | None = None  # several nodes: runs waiting elsewhere
        self._listener: LaneListener | None = None  # several nodes: their ends and starts
        # Housekeeping on the loop's own timer: not one of the run timers
        # (retry delays, timeouts) that `call_later` lets a test move.
        self._idle_memory = IdleMemory(self._is_idle, loop_call_later)
        self.events.listen(self._idle_memory.on_event)
        # A node of several that cannot renew its lease kills its runs (node_lease.py).
        self.fencing = Fencing(
            node=node or "",
            runner=self._runner,
            queues=self._queues,
            executor=self._executor,
            writer=self._writer,
            events=self.events,
            own_runs=self._own_runs,
            clock=clock,
        )
        # Runs of the services' instances: recorded here, supervised elsewhere.
        self.recorder = RunRecorder(
            writer=self._writer, runner=self._runner, events=self.events, store=store, node=node
        )

    @property
    def tasks(self) -> dict[str, TaskDefinition]:
        return self._runner.tasks

    @property
    def observer(self) -> EngineObserver:
        """Told of run ends, cron lag, missed ticks and commit times (the metrics)."""
        return self._runner.observer

    @observer.setter
    def observer(self, observer: EngineObserver) -> None:
        self._runner.observer = observer

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
        self._loop = asyncio.get_running_loop()
        # A registered node of several claims each start in the shared database.
        self._runner.claims = self.node is not None and self._store.fence is not None
        self._writer.start()
        await self._recover()
        if self._runner.claims:
            self._sharing = QueueSharing(
                room=self._room_for_others,
                limits=self._start_limits,
                adopt=self._store.adopt_pending,
                take=self._take_adopted,
            )
            self._sharing.start()
            self._listener = self._store.listen_for_lanes(self._lanes_moved, self._stop_asked)
        self._runner.accepting = True
        self._retention_task = asyncio.get_running_loop().create_task(
            retention_forever(self._retention_interval, self.apply_retention)
        )
        self._runner.pump()

    async def shutdown(self, timeout: float) -> None:
        """Stop every running run gracefully within `timeout` seconds; pending runs stay pending."""
        self._runner.accepting = False
        self._runner.stopping = True
        self._executor.stopping = True
        if self._sharing is not None:
            await self._sharing.close()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.close)
        if self._retention_task is not None:
            self._retention_task.cancel()
        self._idle_memory.close()
        self._queues.clear()
        for active in list(self._runner.active.values()):
            active.daemon_stopping = True
            self._executor.terminate(active)
        if self._runner.executions:
            _done, still = await asyncio.wait(self._runner.executions, timeout=timeout)
            if still:
                for active in self._runner.active.values():
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
        """Return whether runs can be recorded now: the database answers, the disk has room.

        A node of several also reports its lease: a fenced node starts no runs.
        """
        report = await self._health.check()
        if self.node is None:
            return report
        return with_lease(report, self.fencing.reason)

    def log_path(self, run_id: str) -> Path:
        # ULIDs start with their timestamp: six characters make buckets of ~3 days,
        # so no directory ever holds millions of files.
        return Path(f"{self._logs_dir}/{run_id[:6]}/{run_id}.log")

    def _due(self) -> None:
        self._runner.pump()

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
        active = self._runner.active.get(run_id)
        return active.run if active else None

    def _is_idle(self) -> bool:
        return not self._runner.active and not self._queues.any_queued()

    def running_here(self) -> int:
        """Return how many runs hold a slot here (started, or starting now)."""
        return len(self._runner.active)

    def is_started(self, run_id: str) -> bool:
        """Return whether the run holds a slot here (started, or starting now)."""
        return run_id in self._runner.active

    async def live_output(self, run_id: str) -> dict[str, list[list[str]]] | None:
        """Return what a running run has written so far, or None if it is not running here."""
        if run_id not in self._runner.active:
            return None
        return await self._executor.read_output(run_id)

    async def wait_for_end(self, run_id: str, timeout: float) -> Run | None:
        """Wait up to `timeout` seconds for the run to end; return it, or None on timeout."""
        # Register before looking: a run that ends while the store is read still wakes us.
        future: asyncio.Future[Run] = asyncio.get_running_loop().create_future()
        self._runner.end_waiters.setdefault(run_id, []).append(future)
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
            waiters = self._runner.end_waiters.get(run_id)
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
        claim: bool = False,
        note: str = "",
        account: str | None = None,
        secret_hash: str | None = None,
        run_id: str | None = None,
        input_size: int | None = None,
    ) -> list[Run]:
        """Admit one trigger (one run per replica) and return the runs as recorded.

        A cron trigger passes its `tick`: it is recorded as fired in the same
        transaction as the runs; with `claim` (several nodes) only if no node
        fired it yet, else TickTaken and nothing is recorded. `note` is added
        to the runs' descriptions. A
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
        if self.fencing.fenced:
            raise self.fencing.refusal()
        if not self._runner.accepting:
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
            input_size = len(input_json(input_data).encode("utf-8", "surrogatepass"))
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
                await asyncio.to_thread(stage_input_files, self.inputs, ids, input_data)
            except UnicodeError as error:  # callers check text at the boundary; defence in depth
                await asyncio.to_thread(delete_input_files, self.inputs, ids)
                raise StoreError(f"input data cannot be stored: {error}") from error
        request = TriggerRequest(
            task,
            ids,
            values,
            triggered_by,
            inline,
            input_size,
            note,
            account,
            secret_hash,
            node=self.node,
        )
        try:
            return await self._admit(request, tick, claim)
        except BaseException:
            if in_file:
                # Not recorded: its input files belong to nobody.
                await asyncio.to_thread(delete_input_files, self.inputs, ids)
            raise

    async def _admit(
        self, request: TriggerRequest, tick: datetime | None, claim: bool = False
    ) -> list[Run]:
        task, account = request.task, request.account
        to_start: list[Run] = []
        # Places are held until the insert is answered, whatever the answer; on
        # success the queue holds the runs by then.
        with self._ledger.reserve(task.name, account) as reservation:
            plan = plan_trigger(request, self._ledger, reservation, self._clock)
            runs, queued = plan.runs, plan.pending
            to_kill = self._runner.oldest_running(task.name, plan.kills)
            for run in queued:
                self._queues.inputs.add(run)
            try:
                # Urgent: whoever triggered is waiting for the commit to be answered.
                # A caller waits TRIGGER_WAIT_SECONDS at most for an unavailable
                # database; a cron tick waits as long as it takes.
                ticks = {task.name: tick} if tick is not None else None
                give_up_after = TRIGGER_WAIT_SECONDS if tick is None else None
                if self._runner.claims:
                    # Several nodes: the cluster's counts decide (store/claims.py).
                    runs, queued, to_start = await self._admit_in_cluster(
                        task, plan, ticks, claim, give_up_after
                    )
                    to_kill = []  # asked of the node running each one (store/notices.py)
                else:
                    await self._writer.write(
                        inserts=runs,
                        ticks=None if claim else ticks,
                        claims=ticks if claim else None,
                        urgent=True,
                        give_up_after=give_up_after,
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
                self._runner.announce_end(run)
        self._queues.enqueue(*queued)
        for run in to_start:
            self._runner.start_claimed(run)
        for active in to_kill:
            active.stop_requested = True
            self._executor.terminate(active)
        self._runner.pump()
        return runs

    async def _admit_in_cluster(
        self,
        task: TaskDefinition,
        plan: TriggerPlan,
        ticks: dict[str, datetime] | None,
        claim: bool,
        give_up_after: float | None,
    ) -> tuple[list[Run], list[Run], list[Run]]:
        """Insert a trigger's runs, admitted under the cluster's counts (several nodes).

        Return its runs as stored, those that wait in this node's queue, and
        those that start now (their starts were claimed with the insert).
        """
        admission = cluster_admission(task, plan, self._clock())
        fates = await self._writer.admit(
            plan.runs,
            admission,
            self._start_limits_of(task, plan),
            ticks=None if claim else ticks,
            claims=ticks if claim else None,
            give_up_after=give_up_after,
        )
        forms = {run.pending.id: run for run in admission.runs}
        runs: list[Run] = []
        queued: list[Run] = []
        to_start: list[Run] = []
        for run in plan.runs:
            form = forms.get(run.id)
            fate = fates.get(run.id)
            if form is None or fate is None:
                runs.append(run)  # refused here already (on this node's own counts)
            elif fate is Claim.GRANTED and form.running is not None:
                runs.append(form.running)
                to_start.append(form.running)
            elif fate is Claim.SKIPPED and form.skipped is not None:
                runs.append(form.skipped)
            elif fate is Claim.QUEUE_FULL and form.queue_full is not None:
                runs.append(form.queue_full)
            elif fate is Claim.GONE:
                runs.append(run)  # (a replayed commit: stopped or taken since it landed)
            else:
                runs.append(run)
                queued.append(run)
                if form.running is not None:
                    self._runner.block(run)  # it was to start: its place is taken elsewhere
        waiting = {run.id for run in queued}
        for run in plan.pending:
            if run.id not in waiting:
                self._queues.inputs.remove(run)  # (counted only while a run waits here)
        return runs, queued, to_start

    async def replace_tasks(self, tasks: Mapping[str, TaskDefinition]) -> list[Run]:
        """Swap in a reloaded set of tasks; return the runs ended because their task went away.

        Runs in flight keep the definition they started with; queued runs of a
        task that still exists start with its new definition.
        """
        removed = set(self.tasks) - set(tasks)
        self._runner.tasks = dict(tasks)
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
        if ended and self._runner.claims:
            # Only those still waiting here: another node may have taken some.
            stored = await asyncio.to_thread(self._store.end_pending, ended)
            ended = [run for run in ended if run.id in stored]
        elif ended:
            await self._writer.write(updates=ended)
        for run in ended:
            self._runner.finish(run)
        self._runner.pump()
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
        self._runner.pump()

    async def record_missed(
        self, task_name: str, count: int, first: datetime, last: datetime, *, claim: bool = False
    ) -> Run:
        """Record one `missed` run for `count` ticks that did not fire; mark `last` handled.

        With `claim` (several nodes): only if no node handled `last` yet, else TickTaken.
        """
        missed = missed_run(task_name, count, first, last, self._clock, self.node)
        ticks = {task_name: last}
        await self._writer.write(
            inserts=[missed], ticks=None if claim else ticks, claims=ticks if claim else None
        )
        self.events.publish("run.created", event_data(missed))
        self.events.publish("run.ended", event_data(missed))
        self.observer.ticks_missed(task_name, count)
        self.observer.run_ended(missed)
        return missed

    async def stop(self, run_id: str) -> Run:
        """Stop a run: signal it if running, end it as stopped if still waiting."""
        active = self._runner.active.get(run_id)
        if active is not None:
            active.stop_requested = True
            self._executor.terminate(active)
            return active.run
        ending = self._runner.ending.get(run_id)
        if ending is not None:
            raise RunAlreadyEnded(ending)
        waiting = self._queues.take(run_id)
        if waiting is not None:
            ended = self._ended_unrun(
                waiting, EndReason.STOPPED, "Stopped on request before it started."
            )
            self._runner.ending[run_id] = ended
            try:
                if self._runner.claims:
                    # Another node may have taken it from this queue meanwhile.
                    if not await asyncio.to_thread(self._store.end_pending, [ended]):
                        return await self._stop_taken(run_id)
                else:
                    # The caller waits for an unavailable database as long as a
                    # trigger would; then the run goes back to its place and waits on.
                    await self._writer.write(
                        updates=[ended], urgent=True, give_up_after=TRIGGER_WAIT_SECONDS
                    )
            except StoreError:
                self._runner.put_back(waiting)
                raise
            finally:
                self._runner.ending.pop(run_id, None)
            self._runner.finish(ended)
            return ended
        return await self._stop_taken(run_id)

    async def _stop_taken(self, run_id: str) -> Run:
        """Answer a stop of a run that is not running or waiting here (stored elsewhere)."""
        run = await asyncio.to_thread(self._store.get_run, run_id)
        if run is None:
            raise NotFound("run", run_id)
        if run.is_active and self.node is not None and run.node not in (None, self.node):
            raise RunOnAnotherNode(run)
        if run.is_active and run.kind is RunKind.SERVICE:
            raise ServiceLifetimeStop(run)
        raise RunAlreadyEnded(run)

    # ----- admission helpers -------------------------------------------------

    def _ended_unrun(self, run: Run, reason: EndReason, detail: str) -> Run:
        """Return `run` ended without ever having a process."""
        return ended_unrun(run, reason, detail, self._clock())

    def _signal_disk_full(self, task_name: str, error: DiskFull) -> None:
        # Not a run event (no run was recorded): listeners only, not /api/events.
        self.events.signal("disk_full", {"task_name": task_name, "detail": str(error)})

    # ----- recovery and retention --------------------------------------------

    async def _recover(self) -> None:
        """End runs a dead daemon left running (crashed) and requeue pending ones."""
        leftovers = await asyncio.to_thread(self._own_runs)
        started = await asyncio.to_thread(self._started.leftovers)
        crashed = crashed_ids(leftovers, started)
        hunted = crashed
        if self.node is not None:
            # Runs another node ended while this one was gone (it took them
            # over) are no leftovers of ours any more, yet their processes may
            # live on here: none may run while its run is recorded ended.
            hunted = crashed | started
        strays = await asyncio.to_thread(self._executor.strays.table.kill_runs, hunted)
        plan = plan_recovery(leftovers, crashed, strays, self.tasks, self._clock())
        _log_service_strays(leftovers, strays)
        for crashed_run, retry in plan.retried:
            plan.replace_retry(retry, await self._runner.link_retry_input(crashed_run, retry))
        # No run has a process now: workspaces left behind belong to nobody (a
        # crashed run's output is not kept: which spare it wrote into was in memory).
        await asyncio.to_thread(self.workspace.remove_except, ())
        await asyncio.to_thread(self.workspace.fill_spares)
        self._started.open()
        if plan.updates or plan.inserts:
            await self._writer.write(inserts=plan.inserts, updates=plan.updates)
            for ended in plan.updates:
                self._runner.announce_end(ended)
        self._runner.accepting = True
        for run in plan.pending:
            self._runner.schedule(run)

    def _room_for_others(self) -> int:
        """Free slots that no run queued here will take (several nodes)."""
        if not self._runner.accepting or self.fencing.fenced:
            return 0
        ledger = self._ledger
        waiting = self._queues.queued_outside(self._runner.blocked)
        return ledger.max_concurrent_runs - ledger.running - waiting

    def _start_limits_of(self, task: TaskDefinition, plan: TriggerPlan) -> StartLimits:
        """The limits one trigger's starts are claimed under."""
        accounts = {run.account: self._ledger.account_limit(run.account) for run in plan.pending}
        return StartLimits(
            {task.name: effective(task).max_concurrent},
            {account: limit for account, limit in accounts.items() if account is not None},
        )

    def _start_limits(self) -> StartLimits:
        return StartLimits(
            {name: effective(task).max_concurrent for name, task in self.tasks.items()},
            dict(self._ledger.account_limits),
        )

    def _lanes_moved(self, tasks: set[str] | None) -> None:
        # On the listener's thread: another node's run of these tasks ended or started.
        self._loop.call_soon_threadsafe(self._runner.unblock, tasks)

    def _stop_asked(self, run_ids: set[str]) -> None:
        # On the listener's thread: a trigger of an on_overlap = kill task, on
        # any node, asked these runs to make room.
        self._loop.call_soon_threadsafe(self._stop_for_room, run_ids)

    def _stop_for_room(self, run_ids: set[str]) -> None:
        for run_id in run_ids:
            active = self._runner.active.get(run_id)
            if active is not None and not active.stop_requested:
                active.stop_requested = True
                self._executor.terminate(active)

    def _take_adopted(self, runs: list[Run]) -> None:
        for run in runs:
            if run.id in self._runner.active:
                continue  # taken back while it was starting here: it starts (or ends) here
            # A copy left in the queue from before another node took it is dropped.
            self._queues.take(run.id)
            self._runner.put_back(run)  # at its place by age, not behind younger runs
        # They are the oldest of their lanes: claim them now, blocked or not.
        self._runner.unblock({run.task_name for run in runs})
        self._runner.pump()

    def take_in(self, ended: list[Run], pending: list[Run]) -> None:
        """Follow what was stored for a dead node's runs: announce the ends, queue the rest."""
        for run in ended:
            self._runner.announce_end(run)
        for run in pending:
            self._runner.schedule(run)
        self._runner.pump()

    def _delete_run_files(self, run_id: str) -> None:
        delete_log(self.log_path(run_id))
        self.inputs.delete(run_id)

    async def apply_retention(self) -> int:
        """Delete ended runs (rows and log files) beyond keep_runs / older than keep_for."""
        rules = keep_rules(self.tasks.values(), self.recorder.keep_runs)
        return await apply_retention(self._store, rules, self._clock(), self._delete_run_files)


def _log_service_strays(leftovers: list[Run], strays: Mapping[str, list[int]]) -> None:
    # A service's processes outlive a killed daemon holding their ports: say which
    # were killed (a task's are noted in its crashed run's description).
    for run in leftovers:
        groups = strays.get(run.id)
        if groups and run.kind is RunKind.SERVICE:
            log.warning(
                "killed a service process the previous daemon left running "
                "(service %s, run %s, process group %s)",
                run.task_name,
                run.id,
                ", ".join(str(group) for group in groups),
            )
