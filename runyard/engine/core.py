"""The engine: admits triggers, queues them FIFO, runs them, records how they ended.

All state below lives on one event loop; only the store is touched from a
thread (through the StoreWriter), so no locks are needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ulid import ULID

from runyard import __version__
from runyard.domain.describe import (
    describe_end,
    describe_queued,
    describe_start,
    describe_trigger,
    describe_wait,
)
from runyard.domain.models import (
    EXIT_CRASHED,
    EXIT_NOT_RUN,
    EXIT_START_FAILED,
    EndReason,
    LogOnFull,
    Run,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.domain.params import ParamError, resolve_params
from runyard.domain.policies import (
    Admission,
    Load,
    admit,
    classify_exit,
    retention_cutoff,
    retry_delay,
    should_retry,
)
from runyard.engine import run_log
from runyard.engine.environment import build_argv, build_environment, load_secrets, mask_values
from runyard.engine.events import EventHub
from runyard.engine.health import DiskSpace, HealthMonitor, HealthReport
from runyard.engine.identity import resolve_user
from runyard.engine.observer import EngineObserver, NoObserver
from runyard.engine.process import ChildProcess, spawn, use_pidfd_child_watcher
from runyard.engine.queued_input import QueuedInput
from runyard.engine.start_log import STARTED_LOG, StartLog
from runyard.engine.strays import StrayKiller
from runyard.engine.workspace import WORK_DIR, Workspace
from runyard.engine.writer import StoreWriter
from runyard.exceptions import (
    DiskFull,
    InputQueueFull,
    InvalidInput,
    NotFound,
    RunyardError,
    StoreError,
    StoreUnavailable,
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

# A queue lane: the runs of one task triggered by one v3 account (None: REST,
# CLI and cron). Lanes keep a saturated account from holding back the others.
Lane = tuple[str, str | None]


def utc_now() -> datetime:
    return datetime.now(UTC)


class ShuttingDown(RunyardError):
    """The daemon is stopping and accepts no new runs."""


class RunAlreadyEnded(RunyardError):
    """A stop was asked for a run that has already ended."""

    def __init__(self, run: Run) -> None:
        self.run = run
        super().__init__(
            f"run {run.id} already ended ({run.end_reason.value if run.end_reason else ''})"
        )


@dataclasses.dataclass
class _Active:
    """A run the engine is executing, with what it needs to stop it."""

    run: Run
    task: TaskDefinition
    child: ChildProcess | None = None
    stop_requested: bool = False
    timed_out: bool = False
    log_overflowed: bool = False
    daemon_stopping: bool = False
    kill_timer: asyncio.TimerHandle | None = None


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
    ) -> None:
        self.tasks: dict[str, TaskDefinition] = dict(tasks)
        self.max_concurrent_runs = max_concurrent_runs
        # v3 account id -> its max_concurrent_runs (None: no account limit).
        self.account_limits: dict[str, int | None] = dict(account_limits or {})
        # v3 account id -> its max_queued_input in bytes (None: no account cap).
        self.account_input_limits: dict[str, int | None] = dict(account_input_limits or {})
        self.max_output_size = max_output_size
        self.workspace = Workspace(data_dir / WORK_DIR)
        self.inputs = InputFiles(data_dir / INPUTS_DIR)
        self._queued_input = QueuedInput()
        self.followers = LogFollowers()
        self.events = EventHub()
        # Told of run ends, cron lag, missed ticks and commit times (the metrics).
        self.observer: EngineObserver = NoObserver()
        self._store = store
        self._logs_dir = data_dir / LOGS_DIR
        self._clock = clock
        self._base_environ = dict(base_environ)
        self._retention_interval = retention_interval
        self._writer = StoreWriter(store, on_commit=self._store_written)
        self._disk = DiskSpace(data_dir)
        self._health = HealthMonitor(store.ping, self._writer, self._disk)
        self._started = StartLog(data_dir / STARTED_LOG, lambda: list(self._active))
        self._strays = StrayKiller()
        self._active: dict[str, _Active] = {}
        self._executions: set[asyncio.Task[None]] = set()
        self._running_per_task: dict[str, int] = defaultdict(int)
        self._running_per_account: dict[str | None, int] = defaultdict(int)
        self._queues: dict[Lane, deque[Run]] = defaultdict(deque)
        self._queued_per_task: dict[str, int] = defaultdict(int)
        self._delayed: dict[str, tuple[Run, asyncio.TimerHandle]] = {}
        # Admitted triggers whose insert is not committed yet still hold their place.
        self._admitting_start: dict[str, int] = defaultdict(int)
        self._admitting_queue: dict[str, int] = defaultdict(int)
        self._admitting_account: dict[str | None, int] = defaultdict(int)
        self._admitting_lane: dict[Lane, int] = defaultdict(int)
        self._end_waiters: dict[str, list[asyncio.Future[Run]]] = defaultdict(list)
        # Runs whose process is gone and whose end is being recorded.
        self._ending: dict[str, Run] = {}
        self._accepting = False
        self._stopping = False
        self._upkeep: asyncio.Future[None] | None = None  # the workspace upkeep in flight
        self._retention_task: asyncio.Task[None] | None = None

    # ----- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Recover what a previous daemon left behind, then begin dispatching."""
        use_pidfd_child_watcher()
        self._writer.start()
        await self._recover()
        self._accepting = True
        self._retention_task = asyncio.get_running_loop().create_task(self._retention_forever())
        self._pump()

    async def shutdown(self, timeout: float) -> None:
        """Stop every running run gracefully within `timeout` seconds; pending runs stay pending."""
        self._accepting = False
        self._stopping = True
        if self._retention_task is not None:
            self._retention_task.cancel()
        for _run, timer in self._delayed.values():
            timer.cancel()
        self._delayed.clear()
        self._queues.clear()
        self._queued_per_task.clear()
        self._queued_input.clear()
        for active in list(self._active.values()):
            active.daemon_stopping = True
            self._terminate(active)
        if self._executions:
            _done, still = await asyncio.wait(self._executions, timeout=timeout)
            if still:
                for active in self._active.values():
                    if active.child is not None:
                        active.child.signal_group(signal.SIGKILL)
                await asyncio.wait(still, timeout=10)
        if self._upkeep is not None:
            # Its thread must not make directories while the caller removes the data dir.
            await asyncio.wait([self._upkeep])
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
        queued = self._queued_per_task.get(task_name, 0) + sum(
            1 for run, _ in self._delayed.values() if run.task_name == task_name
        )
        return self._running_per_task.get(task_name, 0), queued

    def account_counts(self, account: str) -> tuple[int, int]:
        """Return (running, queued) runs a v3 account triggered, here."""
        queued = sum(len(queue) for (_, owner), queue in self._queues.items() if owner == account)
        queued += sum(1 for run, _ in self._delayed.values() if run.account == account)
        return self._running_per_account.get(account, 0), queued

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
        data, _notes = await asyncio.to_thread(
            self.workspace.read_output, run_id, self.max_output_size
        )
        return data

    async def wait_for_end(self, run_id: str, timeout: float) -> Run | None:
        """Wait up to `timeout` seconds for the run to end; return it, or None on timeout."""
        # Register before looking: a run that ends while the store is read still wakes us.
        future: asyncio.Future[Run] = asyncio.get_running_loop().create_future()
        self._end_waiters[run_id].append(future)
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
        effective = _effective(task)
        inline = input_data
        if input_data is not None:
            # surrogatepass: only a count; text no store takes is refused where it is stored.
            input_size = len(dump_input(input_data).encode("utf-8", "surrogatepass"))
            if input_size >= INLINE_INPUT_BYTES:
                inline = None
        if input_size is not None and admit(effective, self._load(task.name, account)) is (
            Admission.QUEUE
        ):
            refusal = self._queued_input.refusal(
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
        now = self._clock()
        runs: list[Run] = []
        queued: list[Run] = []
        reserved = {"start": 0, "queue": 0}
        lane: Lane = (task.name, account)
        effective = _effective(task)
        to_kill: list[_Active] = []
        for index in range(task.replicas):
            load = self._load(task.name, account)
            decision = admit(effective, load)
            lines = [describe_trigger(triggered_by, index, __version__), note]
            if decision is Admission.QUEUE:
                lines.append(describe_queued(effective, load))
            run = Run(
                id=ids[index],
                task_name=task.name,
                status=RunStatus.PENDING,
                created_at=now,
                triggered_by=triggered_by,
                replica_index=index,
                params=values,
                description="\n".join(filter(None, lines)),
                input_data=input_data,
                input_size=input_size,
                account=account,
                secret_hash=secret_hash,
            )
            if decision is Admission.SKIP:
                run = self._ended_unrun(
                    run,
                    EndReason.SKIPPED,
                    "Another run of the task was running (on_overlap = skip).",
                )
            elif decision is Admission.QUEUE_FULL:
                run = self._ended_unrun(
                    run, EndReason.QUEUE_FULL, f"{task.max_queued} runs were already waiting."
                )
            else:
                if decision is Admission.KILL_OLDEST:
                    to_kill.extend(self._oldest_running(task.name, exclude=to_kill))
                if decision is Admission.START:
                    self._admitting_start[task.name] += 1
                    self._admitting_account[account] += 1
                    reserved["start"] += 1
                else:
                    self._admitting_queue[task.name] += 1
                    self._admitting_lane[lane] += 1
                    reserved["queue"] += 1
                queued.append(run)
                self._queued_input.add(run)
            runs.append(run)
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
                self._queued_input.remove(run)
            self._signal_disk_full(task.name, error)
            raise
        except BaseException:
            for run in queued:
                self._queued_input.remove(run)
            raise
        finally:
            # Release the reservations whatever happened; on success the queue holds the runs now.
            self._admitting_start[task.name] -= reserved["start"]
            self._admitting_account[account] -= reserved["start"]
            self._admitting_queue[task.name] -= reserved["queue"]
            self._admitting_lane[lane] -= reserved["queue"]
        for run in runs:
            self.events.publish("run.created", _event_data(run))
            if run.status is RunStatus.ENDED:
                self.events.publish("run.ended", _event_data(run))
                run_log.run_ended(run)
                self.observer.run_ended(run)
        self._enqueue(*queued)
        for active in to_kill:
            active.stop_requested = True
            self._terminate(active)
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
            waiting: list[Run] = []
            for lane in [lane for lane in self._queues if lane[0] == name]:
                waiting.extend(self._queues.pop(lane))
            self._queued_per_task.pop(name, None)
            for run_id, (run, timer) in list(self._delayed.items()):
                if run.task_name == name:
                    timer.cancel()
                    del self._delayed[run_id]
                    waiting.append(run)
            for run in waiting:
                self._queued_input.remove(run)
            ended.extend(
                self._ended_unrun(
                    run,
                    EndReason.SKIPPED,
                    f"Task {name!r} was removed from the config by a reload.",
                )
                for run in waiting
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
        self.max_concurrent_runs = max_concurrent_runs
        self.account_limits = dict(account_limits)
        if account_input_limits is not None:
            self.account_input_limits = dict(account_input_limits)
        self._pump()

    async def record_missed(
        self, task_name: str, count: int, first: datetime, last: datetime
    ) -> Run:
        """Record one `missed` run for `count` ticks that did not fire; mark `last` handled."""
        ticks = "1 scheduled tick was" if count == 1 else f"{count} scheduled ticks were"
        when = (
            f"at {first.isoformat()}"
            if count == 1
            else f"between {first.isoformat()} and {last.isoformat()}"
        )
        run = Run(
            id=str(ULID()),
            task_name=task_name,
            status=RunStatus.PENDING,
            created_at=self._clock(),
            triggered_by=TriggeredBy.CRON,
        )
        run = dataclasses.replace(run, description=describe_start(run, __version__))
        missed = self._ended_unrun(
            run, EndReason.MISSED, f"{ticks} missed {when} while the daemon was not running."
        )
        await self._writer.write(inserts=[missed], ticks={task_name: last})
        self.events.publish("run.created", _event_data(missed))
        self.events.publish("run.ended", _event_data(missed))
        self.observer.ticks_missed(task_name, count)
        self.observer.run_ended(missed)
        return missed

    async def stop(self, run_id: str) -> Run:
        """Stop a run: signal it if running, end it as stopped if still waiting."""
        active = self._active.get(run_id)
        if active is not None:
            active.stop_requested = True
            self._terminate(active)
            return active.run
        ending = self._ending.get(run_id)
        if ending is not None:
            raise RunAlreadyEnded(ending)
        waiting = self._take_waiting(run_id)
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

    def _load(self, task_name: str, account: str | None) -> Load:
        running = self._running_per_task[task_name] + self._admitting_start[task_name]
        queued = self._queued_per_task[task_name] + self._admitting_queue[task_name]
        global_running = len(self._active) + sum(self._admitting_start.values())
        lane: Lane = (task_name, account)
        return Load(
            running,
            queued,
            global_running,
            self.max_concurrent_runs,
            account_running=self._running_per_account[account] + self._admitting_account[account],
            account_limit=self._account_limit(account),
            lane_queued=len(self._queues.get(lane, ())) + self._admitting_lane[lane],
        )

    def _account_limit(self, account: str | None) -> int | None:
        return None if account is None else self.account_limits.get(account)

    def _enqueue(self, *waiting: Run) -> None:
        for run in waiting:
            self._queues[(run.task_name, run.account)].append(run)
            self._queued_per_task[run.task_name] += 1

    def _oldest_running(self, task_name: str, exclude: list[_Active]) -> list[_Active]:
        candidates = [
            active
            for active in self._active.values()
            if active.run.task_name == task_name
            and not active.stop_requested
            and active not in exclude
        ]
        candidates.sort(
            key=lambda active: (active.run.start_at or active.run.created_at, active.run.id)
        )
        return candidates[:1]

    def _ended_unrun(self, run: Run, reason: EndReason, detail: str) -> Run:
        """Return `run` ended without ever having a process."""
        return dataclasses.replace(
            run,
            status=RunStatus.ENDED,
            end_reason=reason,
            exit_code=EXIT_NOT_RUN,
            end_at=self._clock(),
            description="\n".join(
                filter(None, [run.description, describe_end(reason, EXIT_NOT_RUN, detail=detail)])
            ),
        )

    def _take_waiting(self, run_id: str) -> Run | None:
        for queue in self._queues.values():
            for run in queue:
                if run.id == run_id:
                    queue.remove(run)
                    self._queued_per_task[run.task_name] -= 1
                    self._queued_input.remove(run)
                    return run
        delayed = self._delayed.pop(run_id, None)
        if delayed is not None:
            delayed[1].cancel()
            self._queued_input.remove(delayed[0])
            return delayed[0]
        return None

    def _put_back(self, run: Run) -> None:
        """Return a run taken from its queue (or its retry delay) to its place."""
        if self._stopping:
            return  # it is pending in the store: the next daemon queues it
        if run.not_before is not None and run.not_before > self._clock():
            self._schedule(run)
            return
        queue = self._queues[(run.task_name, run.account)]
        place = (run.created_at, run.id)
        index = next(
            (i for i, queued in enumerate(queue) if (queued.created_at, queued.id) > place),
            len(queue),
        )
        queue.insert(index, run)
        self._queued_per_task[run.task_name] += 1
        self._queued_input.add(run)
        self._pump()

    def _pump(self) -> None:
        """Start queued runs, oldest first, while slots are free."""
        if not self._accepting:
            return
        while len(self._active) < self.max_concurrent_runs:
            pick: Run | None = None
            for (name, account), queue in self._queues.items():
                if not queue:
                    continue
                task = self.tasks.get(name)
                if task is None or self._running_per_task[name] >= _effective(task).max_concurrent:
                    continue
                limit = self._account_limit(account)
                if limit is not None and self._running_per_account[account] >= limit:
                    continue
                head = queue[0]
                if pick is None or (head.created_at, head.id) < (pick.created_at, pick.id):
                    pick = head
            if pick is None:
                return
            self._queues[(pick.task_name, pick.account)].popleft()
            self._queued_per_task[pick.task_name] -= 1
            self._queued_input.remove(pick)
            task = self.tasks[pick.task_name]
            active = _Active(run=pick, task=task)
            self._active[pick.id] = active
            self._running_per_task[pick.task_name] += 1
            self._running_per_account[pick.account] += 1
            execution = asyncio.get_running_loop().create_task(self._execute(active))
            self._executions.add(execution)
            execution.add_done_callback(self._executions.discard)

    # ----- execution ---------------------------------------------------------

    async def _execute(self, active: _Active) -> None:
        try:
            await self._supervise(active)
        finally:
            # Whatever failed in there, the slot is given back (once: normally
            # it already was, before the end was recorded).
            self._release(active)

    async def _supervise(self, active: _Active) -> None:
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
        self.events.publish("run.started", _event_data(active.run))
        run_log.run_started(active.run)
        writer = LogWriter(self.log_path(active.run.id), task.log_max_size, task.log_on_full)
        exit_code, detail = EXIT_START_FAILED, ""
        stderr_tail: list[str] = []
        reason = EndReason.START_FAILED
        try:
            if active.stop_requested:
                reason, exit_code = (EndReason.STOPPED, EXIT_NOT_RUN)
            else:
                self._started.record(active.run.id)
                exit_code, reason, detail, stderr_tail = await self._run_process(active, writer)
        except Exception as error:  # noqa: BLE001 - a run must always end with a reason
            log.exception("run %s failed inside runyard", active.run.id)
            detail = f"runyard error: {error}"
        finally:
            self._close_log(writer, active.run.id)
        end_at = self._clock()
        run = active.run
        try:
            output, notes = await self._collect_output(run.id)
        except Exception as error:  # noqa: BLE001 - the run still ends with its reason
            log.exception("run %s: could not collect its output data", run.id)
            output, notes = {}, [f"runyard could not read the output data: {error}"]
        loss = writer.loss_note()
        if loss is not None:  # the disk refused even the notice in the log
            notes.append(loss)
        ended = dataclasses.replace(
            run,
            status=RunStatus.ENDED,
            end_reason=reason,
            exit_code=exit_code,
            end_at=end_at,
            output_data=output,
            description="\n".join(
                [
                    run.description,
                    describe_end(
                        reason,
                        exit_code,
                        duration=end_at - (run.start_at or end_at),
                        detail=detail,
                        stderr_tail=[_storable_text(line) for line in stderr_tail],
                    ),
                    *notes,
                ]
            ),
        )
        retry = self._retry_of(ended, task)
        self._ending[ended.id] = ended
        self._release(active)
        if active.child is not None:
            ended = await self._kill_leftovers(ended)
        if retry is not None and retry.input_in_file:
            retry = await self._link_retry_input(ended, retry)
        try:
            ended, retry = await self._record_end(ended, retry)
        except Exception:
            # Left running in the store: the next start ends it crashed (start log).
            log.exception("could not record the end of run %s", ended.id)
            return
        finally:
            self._ending.pop(ended.id, None)
        self._finish(ended)
        if retry is not None:
            self.events.publish("run.created", _event_data(retry))
            self._schedule(retry)

    async def _record_end(self, ended: Run, retry: Run | None) -> tuple[Run, Run | None]:
        """Store a run's end (and its retry); return what was stored.

        The writer tries transient failures again until they land. An end the
        database refuses for good (a value it cannot hold) is stored without
        its output data and with its text cleaned, and failing that, bare: a
        run never stays `running` because of what it printed.
        """
        try:
            await self._writer.write(updates=[ended], inserts=[retry] if retry else [])
            return ended, retry
        except StoreUnavailable:
            raise  # the writer gave up at shutdown: the next daemon ends the run crashed
        except StoreError as error:
            log.error("run %s: its end cannot be stored as it is: %s", ended.id, error)
            note = (
                f"runyard could not store this run's end as it was ({error}); "
                "its output data was dropped."
            )
            ended = dataclasses.replace(
                ended,
                output_data=None,
                description=_storable_text(f"{ended.description}\n{note}"),
            )
        try:
            await self._writer.write(updates=[ended], inserts=[retry] if retry else [])
            return ended, retry
        except StoreUnavailable:
            raise
        except StoreError as error:
            log.error("run %s: its cleaned end cannot be stored either: %s", ended.id, error)
        bare = dataclasses.replace(
            ended, description="runyard could not store how this run ended; see the daemon log."
        )
        await self._writer.write(updates=[bare])
        return bare, None

    def _close_log(self, writer: LogWriter, run_id: str) -> None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - closing a log must never keep a run from ending
            log.exception("run %s: could not close its log", run_id)
        finally:
            self.followers.close_run(run_id)

    async def _run_process(
        self, active: _Active, writer: LogWriter
    ) -> tuple[int, EndReason, str, list[str]]:
        task, run = active.task, active.run
        try:
            run_as = resolve_user(task.user) if task.user else None
            if not run.has_input:
                # A rename of a spare directory: cheaper on the loop than a thread hop.
                workspace_env = self.workspace.prepare(run, self.inputs, run_as)
                self._fill_spares()
            else:
                workspace_env = await asyncio.to_thread(
                    self.workspace.prepare, run, self.inputs, run_as
                )
            secrets = load_secrets(task) if task.secrets or task.secrets_file else {}
            child = await spawn(
                run_id=run.id,
                argv=build_argv(task, run),
                env=build_environment(
                    task,
                    run,
                    self._base_environ,
                    workspace_env,
                    secrets=secrets,
                    identity=run_as.environment() if run_as else None,
                ),
                cwd=Path(task.working_dir) if task.working_dir else None,
                log=writer,
                followers=self.followers,
                clock=self._clock,
                on_log_full=lambda: self._on_log_full(active),
                keeps_newest=task.log_on_full is LogOnFull.DROP_OLD,
                mask=mask_values(secrets),
                umask=task.umask,
                run_as=run_as,
            )
        except OSError as error:
            writer.notice(f"[runyard] could not start: {error}", self._clock())
            return (
                EXIT_START_FAILED,
                EndReason.START_FAILED,
                f"Could not start the process: {error}",
                [],
            )
        active.child = child
        loop = asyncio.get_running_loop()
        timeout_timer = None
        if task.timeout is not None:
            timeout_timer = loop.call_later(task.timeout.total_seconds(), self._on_timeout, active)
        # A stop, a shutdown or a full log may have come while the process was
        # being spawned, when there was no child to signal yet.
        if active.stop_requested or active.daemon_stopping or active.log_overflowed:
            self._terminate(active)
        try:
            exit_code = await child.wait()
        finally:
            if timeout_timer is not None:
                timeout_timer.cancel()
            if active.kill_timer is not None:
                active.kill_timer.cancel()
        reason = classify_exit(
            task,
            exit_code,
            stop_requested=active.stop_requested,
            timed_out=active.timed_out,
            log_overflowed=active.log_overflowed,
            daemon_stopping=active.daemon_stopping,
        )
        detail = ""
        if reason is EndReason.TIMEOUT and task.timeout is not None:
            detail = f"timeout is {task.timeout.total_seconds():g}s."
        return exit_code, reason, detail, child.stderr_tail()

    def _fill_spares(self) -> None:
        """Make spare run directories and remove ended runs' in a thread (one at a time)."""
        if self._upkeep is not None or not self.workspace.needs_upkeep or self._stopping:
            return

        def done(future: asyncio.Future[None]) -> None:
            self._upkeep = None
            if not future.cancelled() and future.exception() is not None:
                log.error("could not make spare run directories", exc_info=future.exception())

        self._upkeep = asyncio.get_running_loop().run_in_executor(None, self.workspace.upkeep)
        self._upkeep.add_done_callback(done)

    async def _collect_output(self, run_id: str) -> tuple[dict[str, list[list[str]]], list[str]]:
        """Freeze what the run wrote into its output dir, then remove its workspace.

        Its directory is never handed to another run, so a process the run left
        behind (killed by _kill_leftovers) cannot see another run's files there.
        """
        if self.workspace.discard_if_empty(run_id):
            self._fill_spares()
            return {}, []
        return await asyncio.to_thread(self.workspace.collect, run_id, self.max_output_size)

    async def _kill_leftovers(self, ended: Run) -> Run:
        """Kill what the run left running in other process groups; say so in its description.

        Called once the run's slot is free: the scan (shared with runs ending
        close to it) delays the record of its end, never the next run's start.
        """
        try:
            groups = await self._strays.kill_leftovers(ended.id)
        except (OSError, RuntimeError) as error:
            log.error("could not look for processes run %s left running: %s", ended.id, error)
            note = f"runyard could not look for processes it left running: {error}."
        else:
            if not groups:
                return ended
            listed = ", ".join(str(group) for group in groups)
            label = "group" if len(groups) == 1 else "groups"
            note = (
                f"Processes it left running in another process group "
                f"(process {label} {listed}) were killed when it ended."
            )
        return dataclasses.replace(ended, description=f"{ended.description}\n{note}")

    def _on_timeout(self, active: _Active) -> None:
        active.timed_out = True
        self._terminate(active)

    def _on_log_full(self, active: _Active) -> None:
        if not active.log_overflowed:
            active.log_overflowed = True
            self._terminate(active)

    def _terminate(self, active: _Active) -> None:
        """Send the task's stop signal to the run's group; SIGKILL after graceful_stop."""
        child = active.child
        if child is None or child.has_exited or active.kill_timer is not None:
            return
        child.signal_group(signal.Signals[active.task.stop_signal])
        active.kill_timer = asyncio.get_running_loop().call_later(
            active.task.graceful_stop.total_seconds(), child.signal_group, signal.SIGKILL
        )

    def _release(self, active: _Active) -> None:
        if self._active.get(active.run.id) is not active:
            return  # released already
        del self._active[active.run.id]
        self._running_per_task[active.run.task_name] -= 1
        self._running_per_account[active.run.account] -= 1
        self._pump()

    def _signal_disk_full(self, task_name: str, error: DiskFull) -> None:
        # Not a run event (no run was recorded): listeners only, not /api/events.
        self.events.signal("disk_full", {"task_name": task_name, "detail": str(error)})

    def _finish(self, ended: Run) -> None:
        self.events.publish("run.ended", _event_data(ended))
        run_log.run_ended(ended)
        self.observer.run_ended(ended)
        for waiter in self._end_waiters.pop(ended.id, []):
            if not waiter.done():
                waiter.set_result(ended)

    # ----- retries -----------------------------------------------------------

    def _retry_of(self, ended: Run, task: TaskDefinition) -> Run | None:
        if ended.end_reason is None or not should_retry(
            task, ended.end_reason, ended.retry_attempt
        ):
            return None
        attempt = ended.retry_attempt + 1
        now = self._clock()
        retry = Run(
            id=str(ULID()),
            task_name=ended.task_name,
            status=RunStatus.PENDING,
            created_at=now,
            triggered_by=ended.triggered_by,
            replica_index=ended.replica_index,
            retry_attempt=attempt,
            retry_of_run_id=ended.id,
            params=ended.params,
            input_data=ended.input_data,
            input_size=ended.input_size,
            account=ended.account,
            secret_hash=ended.secret_hash,
            not_before=now + retry_delay(task, attempt),
        )
        return dataclasses.replace(retry, description=describe_start(retry, __version__))

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
        self._queued_input.add(run)
        delay = 0.0 if run.not_before is None else (run.not_before - self._clock()).total_seconds()
        if delay <= 0:
            self._enqueue(run)
            self._pump()
            return
        timer = asyncio.get_running_loop().call_later(delay, self._release_delayed, run.id)
        self._delayed[run.id] = (run, timer)

    def _release_delayed(self, run_id: str) -> None:
        entry = self._delayed.pop(run_id, None)
        if entry is not None:
            self._enqueue(entry[0])
            self._pump()

    # ----- recovery and retention --------------------------------------------

    async def _recover(self) -> None:
        """End runs a dead daemon left running (crashed) and requeue pending ones."""
        leftovers = await asyncio.to_thread(self._store.active_runs)
        started = await asyncio.to_thread(self._started.leftovers)
        # A run had started if it is recorded running, or if it was about to be
        # (its start log line exists but its status had not been committed).
        crashed_ids = {
            run.id for run in leftovers if run.status is RunStatus.RUNNING or run.id in started
        }
        strays = await asyncio.to_thread(self._strays.table.kill_runs, crashed_ids)
        now = self._clock()
        updates: list[Run] = []
        inserts: list[Run] = []
        pending: list[Run] = []
        for run in leftovers:
            task = self.tasks.get(run.task_name)
            if run.id in crashed_ids:
                groups = ", ".join(str(group) for group in strays.get(run.id, []))
                detail = (
                    f"Processes it left running (process group {groups}) were killed."
                    if groups
                    else ""
                )
                crashed = dataclasses.replace(
                    run,
                    status=RunStatus.ENDED,
                    end_reason=EndReason.CRASHED,
                    exit_code=EXIT_CRASHED,
                    start_at=run.start_at or now,
                    end_at=now,
                    description="\n".join(
                        [
                            run.description,
                            describe_end(EndReason.CRASHED, EXIT_CRASHED, detail=detail),
                        ]
                    ),
                )
                updates.append(crashed)
                retry = self._retry_of(crashed, task) if task is not None else None
                if retry is not None and retry.input_in_file:
                    retry = await self._link_retry_input(crashed, retry)
                if retry is not None:
                    inserts.append(retry)
                    pending.append(retry)
            elif task is None:
                updates.append(
                    self._ended_unrun(
                        run,
                        EndReason.SKIPPED,
                        f"Task {run.task_name!r} is no longer in the config.",
                    )
                )
            else:
                pending.append(run)
        # No run has a process now: workspaces left behind belong to nobody (a
        # crashed run's output is not kept: which spare it wrote into was in memory).
        await asyncio.to_thread(self.workspace.remove_except, ())
        await asyncio.to_thread(self.workspace.fill_spares)
        self._started.open()
        if updates or inserts:
            await self._writer.write(inserts=inserts, updates=updates)
            for ended in updates:
                self.events.publish("run.ended", _event_data(ended))
                run_log.run_ended(ended)
                self.observer.run_ended(ended)
        self._accepting = True
        for run in pending:
            self._schedule(run)

    def _delete_run_files(self, run_id: str) -> None:
        delete_log(self.log_path(run_id))
        self.inputs.delete(run_id)

    async def _retention_forever(self) -> None:
        while True:
            await asyncio.sleep(self._retention_interval)
            try:
                await self.apply_retention()
            except Exception:
                log.exception("retention sweep failed")

    async def apply_retention(self) -> int:
        """Delete ended runs (rows and log files) beyond keep_runs / older than keep_for."""
        deleted = 0
        now = self._clock()
        for task in list(self.tasks.values()):
            if task.keep_runs is None and task.keep_for is None:
                continue
            ids = await asyncio.to_thread(
                self._store.delete_expired,
                task.name,
                task.keep_runs,
                retention_cutoff(now, task.keep_for),
            )
            for run_id in ids:
                await asyncio.to_thread(self._delete_run_files, run_id)
            deleted += len(ids)
        return deleted


def _storable_text(text: str) -> str:
    """Return `text` without what a database refuses: NUL (PostgreSQL), lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def _log_write_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not record a run change", exc_info=future.exception())


def _effective(task: TaskDefinition) -> TaskDefinition:
    # One trigger's replicas always run side by side, whatever max_concurrent says.
    if task.replicas > task.max_concurrent:
        return dataclasses.replace(task, max_concurrent=task.replicas)
    return task


def _event_data(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "task_name": run.task_name,
        "status": run.status.value,
        "end_reason": run.end_reason.value if run.end_reason else None,
        "exit_code": run.exit_code,
    }
