"""Keep services up: one asyncio task per instance, from its start to its stop.

The task waits for the service's dependencies, spawns the process through
`engine.process.spawn` (the same process group, log and signal handling as a
task's run), probes it, and when it ends asks `domain.services` what comes
next: a restart after a delay, `fatal`, or `stopped`. Every state change
wakes whoever waits on one (dependants waiting for readiness, `wait_until`).

Each process's lifetime is handed to `on_ended` as a ServiceLifetime, for
the daemon to record as a run of kind `service`; the supervisor keeps no
history itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from ulid import ULID

from runyard.clock import Clock, utc_now
from runyard.domain.models import EndReason, LogOnFull
from runyard.domain.run_environment import REPLICA_INDEX_ENV, RUN_ID_ENV, SERVICE_ENV
from runyard.domain.services import (
    Instance,
    InstanceState,
    ServiceDefinition,
    diff_services,
    exited,
    is_ready,
    probed,
    settled,
    spawn_failed,
    spawned,
    start_order,
    start_requested,
    stop_requested,
)
from runyard.engine.environment import parse_env_file, runyard_command, with_command_dir
from runyard.engine.identity import RunAs, resolve_user
from runyard.engine.log_follow import LogFollowers
from runyard.engine.process import ChildProcess, spawn
from runyard.services.probes import run_probe
from runyard.store.logs import LogWriter

log = logging.getLogger("runyard.services")


@dataclass(frozen=True)
class ServiceLifetime:
    """One process of one instance, from its spawn (or failed spawn) to its end."""

    run_id: str
    service: str
    index: int
    started_at: datetime
    ended_at: datetime
    exit_code: int
    end_reason: EndReason  # success, failed, unhealthy, stopped, start_failed, log_overflow
    state_after: InstanceState  # backoff, fatal or stopped
    restarts: int  # the instance's restarts so far, this start included
    description: str = ""  # why it ended, in a sentence
    last_probe: str = ""  # the last health check's message (an unhealthy end's cause)


class _Slot:
    """One instance: its state, its supervising task, and its process while there is one."""

    def __init__(self, service: ServiceDefinition, index: int) -> None:
        self.service = service
        self.instance = Instance(service.name, index)
        self.task: asyncio.Task[None] | None = None
        self.child: ChildProcess | None = None
        self.stop = asyncio.Event()  # set by a stop: every wait of the task gives way to it
        self.log_overflowed = False

    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()


class ServiceSupervisor:
    """Run a set of services: start, stop, restart them and apply a reload."""

    def __init__(
        self,
        services: Mapping[str, ServiceDefinition],
        *,
        logs_dir: Path,
        log_path: Callable[[str], Path] | None = None,
        followers: LogFollowers | None = None,
        environ: Mapping[str, str] = os.environ,
        clock: Clock = utc_now,
        on_starting: Callable[[str, ServiceDefinition, int], None] | None = None,
        on_ended: Callable[[ServiceLifetime], None] | None = None,
    ) -> None:
        """`on_starting(run_id, service, index)` is called right before each spawn (where
        the daemon notes the run id, to find the process after a crash, and records
        the lifetime as a run); `on_ended` with each process's lifetime once it is over."""
        self._services = dict(services)
        self._log_path = log_path or (lambda run_id: logs_dir / f"{run_id}.log")
        self._followers = followers or LogFollowers()
        self._environ = environ
        self._clock = clock
        self._on_starting = on_starting
        self._on_ended = on_ended
        self._slots = {name: self._new_slots(service) for name, service in services.items()}
        self._changed = asyncio.Event()

    # ----- what is there ----------------------------------------------------------

    @property
    def services(self) -> dict[str, ServiceDefinition]:
        return dict(self._services)

    def instances(self, name: str) -> list[Instance]:
        """Return the instances of service `name`; KeyError when there is no such service."""
        return [slot.instance for slot in self._slots[name]]

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds, checking it after each state change."""
        while not condition():
            await self._changed.wait()

    # ----- operations ---------------------------------------------------------------

    def start_all(self) -> None:
        """Start every service with autostart, in start order (each waits for its dependencies)."""
        for name in start_order(self._services):
            if self._services[name].autostart:
                self.start(name, manual=False)

    def start(self, name: str, *, manual: bool = True) -> None:
        """Start the instances of `name` not under way; a manual start revives fatal ones."""
        for slot in self._slots[name]:
            if slot.active:
                continue
            if slot.instance.state is InstanceState.FATAL and not manual:
                continue
            slot.stop = asyncio.Event()
            slot.task = asyncio.create_task(
                self._supervise(slot, manual), name=f"service {name}[{slot.instance.index}]"
            )

    async def stop(self, name: str) -> None:
        """Stop every instance of `name` and wait until their processes are gone."""
        await asyncio.gather(*(self._stop_slot(slot) for slot in self._slots[name]))

    async def restart(self, name: str) -> None:
        """Stop `name`, then start it again (a manual start)."""
        await self.stop(name)
        self.start(name)

    async def stop_all(self) -> None:
        """Stop every service, each only after the services that depend on it have stopped."""
        await self._stop_in_order(list(self._services))

    async def reload(self, services: Mapping[str, ServiceDefinition]) -> None:
        """Apply a new set of definitions: restart changed, start added, stop removed ones.

        Services whose definition did not change keep their processes.
        """
        changes = diff_services(self._services, services)
        await self._stop_in_order([*changes.removed, *changes.changed])
        for name in changes.removed:
            del self._services[name], self._slots[name]
        for name in [*changes.changed, *changes.added]:
            self._services[name] = services[name]
            self._slots[name] = self._new_slots(services[name])
        self._services = dict(sorted(self._services.items()))
        # Dependants of a changed service may have been waiting on its old instances.
        self._notify()
        for name in start_order(self._services):
            fresh = name in changes.changed or name in changes.added
            if fresh and self._services[name].autostart:
                self.start(name, manual=False)

    # ----- one instance ---------------------------------------------------------------

    def _new_slots(self, service: ServiceDefinition) -> list[_Slot]:
        return [_Slot(service, index) for index in range(service.instances)]

    def _set(self, slot: _Slot, instance: Instance) -> None:
        # Only a real change wakes the waiters: a waiting instance re-checks its
        # dependencies on each wake-up, and must not wake the others in turn.
        if instance != slot.instance:
            slot.instance = instance
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _unready(self, service: ServiceDefinition) -> list[str]:
        return [
            dep
            for dep in service.depends_on
            if dep in self._services
            and not is_ready(self._services[dep], [slot.instance for slot in self._slots[dep]])
        ]

    async def _supervise(self, slot: _Slot, manual: bool) -> None:
        try:
            await self._keep_up(slot, manual)
        except Exception as exc:
            # A fault of runyard's own must not leave the instance looking alive.
            log.exception("supervising %s[%d] failed", slot.service.name, slot.instance.index)
            reason = f"runyard stopped supervising it: {exc!r}"
            self._set(slot, replace(slot.instance, state=InstanceState.FATAL, reason=reason))

    async def _keep_up(self, slot: _Slot, manual: bool) -> None:
        restart = False
        while True:
            while True:
                missing = self._unready(slot.service)
                self._set(
                    slot,
                    start_requested(slot.instance, not missing, missing, manual=manual),
                )
                manual = False
                if not missing:
                    break
                if await _first(self._changed.wait(), slot.stop.wait()) == 1:
                    self._set(slot, stop_requested(slot.instance))
                    return
            if slot.stop.is_set():
                self._set(slot, stop_requested(slot.instance))
                return
            delay = await self._run_once(slot, restart)
            if delay is None:
                return
            restart = True
            # No delay: restart at once (a stop meanwhile is seen at the top of the loop).
            if delay > 0 and await _first(slot.stop.wait(), timeout=delay) == 0:
                self._set(slot, stop_requested(slot.instance))
                return

    async def _run_once(self, slot: _Slot, restart: bool) -> float | None:
        """Run one process of the instance; return the delay before the next, or None."""
        service = slot.service
        run_id = str(ULID())
        path = self._log_path(run_id)
        log = LogWriter(path, service.log_max_size, service.log_on_full)
        started_at = self._clock()
        slot.log_overflowed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if self._on_starting is not None:
                self._on_starting(run_id, service, slot.instance.index)
            run_as = resolve_user(service.user) if service.user else None
            env = self._environment(service, slot.instance.index, run_id, run_as)
            child = await spawn(
                run_id=run_id,
                argv=[service.shell, "-e", "-c", service.run, service.name],
                env=env,
                cwd=Path(service.working_dir) if service.working_dir else None,
                log=log,
                followers=self._followers,
                clock=self._clock,
                on_log_full=lambda: self._log_full(slot),
                keeps_newest=service.log_on_full is LogOnFull.DROP_OLD,
                run_as=run_as,
            )
        except OSError as exc:
            ended_at = self._clock()
            message = exc.strerror or str(exc)
            log.notice(f"[runyard] could not start: {message}", ended_at)
            log.close(ended_at)
            self._followers.close_run(run_id)
            result = spawn_failed(slot.instance, service, message, ended_at)
            self._set(slot, replace(result.instance, run_id=run_id))
            self._ended(slot, run_id, started_at, ended_at, result.end_reason, result.instance)
            return None if result.restart_in is None else result.restart_in.total_seconds()
        slot.child = child
        self._set(
            slot,
            spawned(slot.instance, service, child.pid, started_at, restart=restart, run_id=run_id),
        )
        exit_code = asyncio.create_task(child.wait())
        helpers = [asyncio.create_task(self._settle(slot))]
        if service.health_check is not None:
            helpers.append(asyncio.create_task(self._probe(slot, child, exit_code, env)))
        try:
            if await _first(asyncio.shield(exit_code), slot.stop.wait()) == 1:
                self._set(slot, stop_requested(slot.instance))
                await self._terminate(slot, child, exit_code)
            code = await exit_code
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            slot.child = None
        ended_at = self._clock()
        log.close(ended_at)
        self._followers.close_run(run_id)
        cause = "the log reached log_max_size" if slot.log_overflowed else ""
        result = exited(slot.instance, service, code, ended_at, cause=cause)
        end_reason = result.end_reason
        if slot.log_overflowed and end_reason is not EndReason.STOPPED:
            end_reason = EndReason.LOG_OVERFLOW
        self._set(slot, result.instance)
        self._ended(slot, run_id, started_at, ended_at, end_reason, result.instance, code)
        return None if result.restart_in is None else result.restart_in.total_seconds()

    async def _terminate(
        self, slot: _Slot, child: ChildProcess, exit_code: asyncio.Task[int]
    ) -> None:
        """Send the stop signal to the process group; SIGKILL it after graceful_stop."""
        child.signal_group(signal.Signals[slot.service.stop_signal])
        try:
            await asyncio.wait_for(
                asyncio.shield(exit_code), slot.service.graceful_stop.total_seconds()
            )
        except TimeoutError:
            child.signal_group(signal.SIGKILL)

    async def _probe(
        self,
        slot: _Slot,
        child: ChildProcess,
        exit_code: asyncio.Task[int],
        env: Mapping[str, str],
    ) -> None:
        service = slot.service
        check = service.health_check
        assert check is not None
        cwd = Path(service.working_dir) if service.working_dir else None
        while True:
            # The first probe one interval after the start, as each next one.
            await asyncio.sleep(check.interval.total_seconds())
            result = await run_probe(check, shell=service.shell, env=env, cwd=cwd)
            now = self._clock()
            self._set(slot, probed(slot.instance, service, result.passed, result.message, now))
            if slot.instance.state is InstanceState.UNHEALTHY:
                await self._terminate(slot, child, exit_code)
                return

    async def _settle(self, slot: _Slot) -> None:
        # Up healthy_after: the failed starts before this one are forgotten.
        await asyncio.sleep(slot.service.healthy_after.total_seconds())
        self._set(slot, settled(slot.instance, slot.service, self._clock()))

    def _log_full(self, slot: _Slot) -> None:
        if slot.log_overflowed or slot.child is None:
            return
        slot.log_overflowed = True
        slot.child.signal_group(signal.SIGKILL)

    async def _stop_slot(self, slot: _Slot) -> None:
        slot.stop.set()
        if slot.task is not None:
            await asyncio.gather(slot.task, return_exceptions=True)
        if slot.instance.state is not InstanceState.FATAL:
            self._set(slot, stop_requested(slot.instance))

    async def _stop_in_order(self, names: list[str]) -> None:
        """Stop `names`, each once those of them that depend on it have stopped."""
        stops: dict[str, asyncio.Task[None]] = {}
        for name in start_order({name: self._services[name] for name in names})[::-1]:
            dependants = [
                stops[other] for other in stops if name in self._services[other].depends_on
            ]
            stops[name] = asyncio.create_task(self._stop_after(name, dependants))
        await asyncio.gather(*stops.values())

    async def _stop_after(self, name: str, first: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*first)
        await self.stop(name)

    def _environment(
        self, service: ServiceDefinition, index: int, run_id: str, run_as: RunAs | None = None
    ) -> dict[str, str]:
        """The instance's environment: the daemon's, env_file, env, then runyard's variables.

        With `user`, HOME, USER and LOGNAME are that user's, not the daemon's.
        """
        env = {**self._environ, **(run_as.environment() if run_as else {})}
        if service.env_file:
            env.update(parse_env_file(Path(service.env_file).read_text(encoding="utf-8")))
        env.update(dict(service.env))
        # RUNYARD_RUN_ID is how a restarted daemon finds a dead daemon's processes.
        env.update(
            {
                RUN_ID_ENV: run_id,
                SERVICE_ENV: service.name,
                REPLICA_INDEX_ENV: str(index),
            }
        )
        command = runyard_command()
        if command is not None:
            env["PATH"] = with_command_dir(env.get("PATH"), command)
        return env

    def _ended(
        self,
        slot: _Slot,
        run_id: str,
        started_at: datetime,
        ended_at: datetime,
        end_reason: EndReason,
        instance: Instance,
        exit_code: int | None = None,
    ) -> None:
        if self._on_ended is None:
            return
        self._on_ended(
            ServiceLifetime(
                run_id=run_id,
                service=slot.service.name,
                index=instance.index,
                started_at=started_at,
                ended_at=ended_at,
                exit_code=exit_code if exit_code is not None else instance.last_exit_code or 0,
                end_reason=end_reason,
                state_after=instance.state,
                restarts=instance.restarts,
                description=instance.reason,
                last_probe=instance.last_probe,
            )
        )


async def _first(*waits: Awaitable[object], timeout: float | None = None) -> int | None:
    """Wait for the first of `waits` to finish; return its position, or None on timeout.

    The others are cancelled (a shielded wait keeps running underneath).
    """
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        # Cancellation of an unfinished wait is its expected end.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
    for position, task in enumerate(tasks):
        if task in done:
            return position
    return None
