"""One run's process, from its workspace and spawn to how it ended (a ProcessOutcome)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from runyard.domain.models import EXIT_START_FAILED, EndReason, LogOnFull, Run, TaskDefinition
from runyard.domain.policies import classify_exit
from runyard.engine.environment import (
    build_argv,
    build_environment,
    load_secrets,
    mask_values,
    runyard_command,
)
from runyard.engine.identity import resolve_user
from runyard.engine.log_follow import LogFollowers
from runyard.engine.process import ChildProcess, spawn
from runyard.engine.runs import ended
from runyard.engine.strays import StrayKiller
from runyard.engine.timers import CallLater, Timer, loop_call_later
from runyard.engine.workspace import Workspace
from runyard.store.inputs import InputFiles
from runyard.store.logs import LogWriter

log = logging.getLogger("runyard.engine")


@dataclasses.dataclass
class ActiveRun:
    """A run the engine is executing, with what it needs to stop it."""

    run: Run
    task: TaskDefinition
    child: ChildProcess | None = None
    stop_requested: bool = False
    timed_out: bool = False
    log_overflowed: bool = False
    daemon_stopping: bool = False
    # Its node could not renew its lease and killed it (engine/fencing.py).
    fenced: bool = False
    kill_timer: Timer | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessOutcome:
    """How a run's process ended, as its end is recorded."""

    exit_code: int
    reason: EndReason
    detail: str = ""
    stderr_tail: list[str] = dataclasses.field(default_factory=list)


class Executor:
    """Prepares a run's workspace, runs its process, stops it, collects what it left."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        inputs: InputFiles,
        followers: LogFollowers,
        base_environ: Mapping[str, str],
        clock: Callable[[], datetime],
        max_output_size: int,
        call_later: CallLater = loop_call_later,
    ) -> None:
        self.workspace = workspace
        self.inputs = inputs
        self.followers = followers
        self.max_output_size = max_output_size
        self.strays = StrayKiller()
        # Set when the daemon stops: no more spare directories are made.
        self.stopping = False
        self._base_environ = dict(base_environ)
        # Looked up once: it is a few file system calls, and it never moves.
        self._command = runyard_command()
        self._clock = clock
        self._call_later = call_later
        self._upkeep: asyncio.Future[None] | None = None  # the workspace upkeep in flight

    async def run(self, active: ActiveRun, writer: LogWriter) -> ProcessOutcome:
        """Run the process of `active` to its end; its output goes to `writer`."""
        task, run = active.task, active.run
        try:
            run_as = resolve_user(task.user) if task.user else None
            if not run.has_input:
                # A rename of a spare directory: cheaper on the loop than a thread hop.
                workspace_env = self.workspace.prepare(run, self.inputs, run_as)
                self.fill_spares()
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
                    command=self._command,
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
            return ProcessOutcome(
                EXIT_START_FAILED, EndReason.START_FAILED, f"Could not start the process: {error}"
            )
        active.child = child
        timeout_timer = None
        if task.timeout is not None:
            timeout_timer = self._call_later(task.timeout.total_seconds(), self._on_timeout, active)
        # A stop, a shutdown, a full log or a fence may have come while the
        # process was being spawned, when there was no child to signal yet.
        if active.fenced:
            self.kill_now(active)
        elif active.stop_requested or active.daemon_stopping or active.log_overflowed:
            self.terminate(active)
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
        return ProcessOutcome(exit_code, reason, detail, child.stderr_tail())

    def terminate(self, active: ActiveRun) -> None:
        """Send the task's stop signal to the run's group; SIGKILL after graceful_stop."""
        child = active.child
        if child is None or child.has_exited or active.kill_timer is not None:
            return
        child.signal_group(signal.Signals[active.task.stop_signal])
        active.kill_timer = self._call_later(
            active.task.graceful_stop.total_seconds(), child.signal_group, signal.SIGKILL
        )

    def kill_now(self, active: ActiveRun) -> None:
        """SIGKILL the run's process group at once, with no grace (a fence)."""
        child = active.child
        if child is not None and not child.has_exited:
            child.signal_group(signal.SIGKILL)

    def _on_timeout(self, active: ActiveRun) -> None:
        active.timed_out = True
        self.terminate(active)

    def _on_log_full(self, active: ActiveRun) -> None:
        if not active.log_overflowed:
            active.log_overflowed = True
            self.terminate(active)

    def close_log(self, writer: LogWriter, run_id: str) -> None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - closing a log must never keep a run from ending
            log.exception("run %s: could not close its log", run_id)
        finally:
            self.followers.close_run(run_id)

    def fill_spares(self) -> None:
        """Make spare run directories and remove ended runs' in a thread (one at a time)."""
        if self._upkeep is not None or not self.workspace.needs_upkeep or self.stopping:
            return

        def done(future: asyncio.Future[None]) -> None:
            self._upkeep = None
            if not future.cancelled() and future.exception() is not None:
                log.error("could not make spare run directories", exc_info=future.exception())

        self._upkeep = asyncio.get_running_loop().run_in_executor(None, self.workspace.upkeep)
        self._upkeep.add_done_callback(done)

    async def wait_for_upkeep(self) -> None:
        """Wait for the upkeep in flight: its thread must not make directories after this."""
        if self._upkeep is not None:
            await asyncio.wait([self._upkeep])

    async def conclude(self, run: Run, writer: LogWriter, outcome: ProcessOutcome) -> Run:
        """Return `run` ended as its process did, with the output data it left.

        Its log is closed already: a note of what the disk refused is final.
        """
        end_at = self._clock()
        try:
            output, notes = await self.collect_output(run.id)
        except Exception as error:  # noqa: BLE001 - the run still ends with its reason
            log.exception("run %s: could not collect its output data", run.id)
            output, notes = {}, [f"runyard could not read the output data: {error}"]
        loss = writer.loss_note()
        if loss is not None:  # the disk refused even the notice in the log
            notes.append(loss)
        return ended(
            run,
            outcome.reason,
            outcome.exit_code,
            end_at,
            detail=outcome.detail,
            duration=end_at - (run.start_at or end_at),
            stderr_tail=outcome.stderr_tail,
            notes=notes,
            output_data=output,
        )

    async def collect_output(self, run_id: str) -> tuple[dict[str, list[list[str]]], list[str]]:
        """Freeze what the run wrote into its output dir, then remove its workspace.

        Its directory is never handed to another run, so a process the run left
        behind (killed by kill_leftovers) cannot see another run's files there.
        """
        if self.workspace.discard_if_empty(run_id):
            self.fill_spares()
            return {}, []
        return await asyncio.to_thread(self.workspace.collect, run_id, self.max_output_size)

    async def read_output(self, run_id: str) -> dict[str, list[list[str]]]:
        """Return what a running run has written to its output dir so far."""
        data, _notes = await asyncio.to_thread(
            self.workspace.read_output, run_id, self.max_output_size
        )
        return data

    async def kill_leftovers(self, ended: Run) -> Run:
        """Kill what the run left running in other process groups; say so in its description.

        Called once the run's slot is free: the scan (shared with runs ending
        close to it) delays the record of its end, never the next run's start.
        """
        try:
            groups = await self.strays.kill_leftovers(ended.id)
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
