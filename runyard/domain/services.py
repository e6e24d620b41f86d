"""Services: long-running programs kept up, health-checked, started in dependency order.

Pure: the definitions read from `[services.<name>]`, the state machine of one
instance, restart delays, start and stop order, and what a reload changes.
The supervisor owns the processes, timers and probes, and only asks these
functions what happens next; time comes in as arguments.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from runyard.domain.models import EXIT_START_FAILED, EndReason, LogOnFull, RetryBackoff

MAX_RESTART_DELAY = timedelta(minutes=5)


class RestartPolicy(StrEnum):
    """When an instance whose process exited is started again."""

    ALWAYS = "always"  # after every exit, whatever the exit code
    ON_FAILURE = "on_failure"  # after a non-zero exit (or a kill for being unhealthy)
    NEVER = "never"  # never: a clean exit is stopped, a failure fatal


class InstanceState(StrEnum):
    """Where one instance of a service stands. Never rename or reorder: the API shows them."""

    WAITING = "waiting"  # to start once its dependencies are ready
    STARTING = "starting"  # its process is up; the health check has not passed yet
    RUNNING = "running"  # its process is up; the service has no health check
    HEALTHY = "healthy"  # its process is up and the last probe passed
    UNHEALTHY = "unhealthy"  # `failures` probes failed in a row: being stopped to restart
    BACKOFF = "backoff"  # its process ended; waiting out the restart delay
    FATAL = "fatal"  # given up after too many failed starts; only a manual start revives it
    STOPPED = "stopped"  # not running, by choice: a stop, autostart = false, a clean exit


# States in which the instance has (or is about to have) a process.
UP_STATES = frozenset(
    {InstanceState.STARTING, InstanceState.RUNNING, InstanceState.HEALTHY, InstanceState.UNHEALTHY}
)


class ProbeKind(StrEnum):
    HTTP = "http"  # GET the URL; a 2xx or 3xx status passes
    TCP = "tcp"  # connect to host:port
    RUN = "run"  # run a command; exit code 0 passes


@dataclass(frozen=True)
class HealthCheck:
    """`[services.<name>.health_check]`: how and how often an instance is probed."""

    kind: ProbeKind
    target: str  # the URL, the host:port, or the command
    interval: timedelta = timedelta(seconds=10)
    timeout: timedelta = timedelta(seconds=5)
    failures: int = 3  # failed probes in a row that make the instance unhealthy
    start_period: timedelta = timedelta(0)  # after each start, failed probes do not count


@dataclass(frozen=True)
class ServiceDefinition:
    """A service as read from the config."""

    name: str
    run: str
    instances: int = 1
    restart: RestartPolicy = RestartPolicy.ALWAYS
    restart_delay: timedelta = timedelta(seconds=1)
    restart_backoff: RetryBackoff = RetryBackoff.EXPONENTIAL
    # Restarts after failed starts in a row; the failed start after the last is fatal.
    restart_attempts: int = 3
    healthy_after: timedelta = timedelta(seconds=60)
    depends_on: tuple[str, ...] = ()
    priority: int = 0
    autostart: bool = True
    graceful_stop: timedelta = timedelta(seconds=5)
    stop_signal: str = "SIGTERM"
    env: tuple[tuple[str, str], ...] = ()
    env_file: str | None = None
    working_dir: str | None = None
    shell: str = "/bin/sh"
    # Who the processes run as (the daemon must be root); None: the daemon's user.
    user: str | None = None
    log_max_size: int = 100 * 1024 * 1024
    log_on_full: LogOnFull = LogOnFull.DROP_OLD
    health_check: HealthCheck | None = None


_HOST_PORT = re.compile(r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]/]+)):(?P<port>\d+)$")


def split_host_port(text: str) -> tuple[str, int] | None:
    """Return (host, port) of `host:port` or `[ipv6]:port`, or None when malformed."""
    match = _HOST_PORT.fullmatch(text.strip())
    if match is None:
        return None
    port = int(match.group("port"))
    if not 1 <= port <= 65535:
        return None
    return match.group("ipv6") or match.group("host"), port


# ----- restarts -----------------------------------------------------------------


def restart_delay(service: ServiceDefinition, failures: int) -> timedelta:
    """Return the wait before the start that follows `failures` failed starts in a row.

    `failures` is 0 after a good start ended: that restart waits the plain
    `restart_delay`, as the first one after a failure does.
    """
    attempt = max(failures, 1)
    base = service.restart_delay
    if service.restart_backoff is RetryBackoff.LINEAR:
        delay = base * attempt
    elif service.restart_backoff is RetryBackoff.EXPONENTIAL:
        # Cap the exponent first: 2**100 seconds overflows timedelta.
        delay = base * (2 ** min(attempt - 1, 32))
    else:
        delay = base
    return min(delay, MAX_RESTART_DELAY)


def is_good_start(service: ServiceDefinition, started_at: datetime, now: datetime) -> bool:
    """Return whether a process started at `started_at` has been up `healthy_after` by `now`."""
    return now - started_at >= service.healthy_after


# ----- one instance ---------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """One instance of a service: its state and the counters the state machine keeps."""

    service: str
    index: int  # 0-based; the process sees it as RUNYARD_REPLICA_INDEX
    state: InstanceState = InstanceState.STOPPED
    reason: str = ""  # a sentence on why it is in this state ("waiting for db")
    pid: int | None = None
    started_at: datetime | None = None  # when the current process started
    failures: int = 0  # failed starts in a row (reset by a good start)
    restarts: int = 0  # starts after the first, since the daemon started
    probe_failures: int = 0  # failed probes in a row of the current process
    restart_at: datetime | None = None  # in backoff: when the next start is due
    stop_requested: bool = False  # a stop is under way: the exit ends as stopped
    last_exit_code: int | None = None
    last_probe: str = ""  # the last probe's message
    last_probe_ok: bool | None = None
    run_id: str | None = None  # the run recording its current process, or its last one


@dataclass(frozen=True)
class Exit:
    """What became of an instance whose process ended."""

    instance: Instance
    end_reason: EndReason  # how the run of kind `service` ends: stopped, success, failed, unhealthy
    restart_in: timedelta | None  # start again after this delay; None: not restarted


def start_requested(
    instance: Instance, deps_ready: bool, waiting_for: Sequence[str] = (), *, manual: bool = False
) -> Instance:
    """Return the instance asked to start: `starting` at once, or `waiting` for dependencies.

    A manual start revives a fatal instance and forgets its failed starts;
    an instance already up is left as it is.
    """
    if instance.state in UP_STATES:
        return instance
    if instance.state is InstanceState.FATAL and not manual:
        return instance
    failures = 0 if manual else instance.failures
    if not deps_ready:
        reason = "waiting for " + ", ".join(waiting_for) if waiting_for else "waiting"
        return replace(
            instance,
            state=InstanceState.WAITING,
            reason=reason,
            failures=failures,
            restart_at=None,
            stop_requested=False,
        )
    return replace(
        instance,
        state=InstanceState.STARTING,
        reason="",
        failures=failures,
        restart_at=None,
        stop_requested=False,
    )


def spawned(
    instance: Instance,
    service: ServiceDefinition,
    pid: int,
    now: datetime,
    *,
    restart: bool,
    run_id: str | None = None,
) -> Instance:
    """Return the instance whose process has just started (`restart`: not its first start).

    `run_id` is the run recording this process.
    """
    state = InstanceState.STARTING if service.health_check else InstanceState.RUNNING
    return replace(
        instance,
        state=state,
        reason="",
        pid=pid,
        started_at=now,
        probe_failures=0,
        restarts=instance.restarts + (1 if restart else 0),
        last_exit_code=None,
        last_probe="",
        last_probe_ok=None,
        run_id=run_id,
    )


def probed(
    instance: Instance, service: ServiceDefinition, passed: bool, message: str, now: datetime
) -> Instance:
    """Return the instance after one probe; `unhealthy` means: stop it and restart.

    Failed probes within `start_period` of the start do not count, and the
    first passing one ends the start-up whenever it comes.
    """
    check = service.health_check
    if check is None or instance.state not in (
        InstanceState.STARTING,
        InstanceState.HEALTHY,
    ):
        return instance  # a late result for a process already on its way out
    if instance.stop_requested:
        return instance
    if passed:
        return replace(
            instance,
            state=InstanceState.HEALTHY,
            reason="",
            probe_failures=0,
            last_probe=message,
            last_probe_ok=True,
        )
    in_start_period = (
        instance.state is InstanceState.STARTING
        and instance.started_at is not None
        and now - instance.started_at < check.start_period
    )
    count = instance.probe_failures if in_start_period else instance.probe_failures + 1
    if count >= check.failures:
        return replace(
            instance,
            state=InstanceState.UNHEALTHY,
            reason=f"{count} health checks failed in a row: {message}",
            probe_failures=count,
            last_probe=message,
            last_probe_ok=False,
        )
    return replace(instance, probe_failures=count, last_probe=message, last_probe_ok=False)


def settled(instance: Instance, service: ServiceDefinition, now: datetime) -> Instance:
    """Return the instance with its failed starts forgotten once it has been up `healthy_after`."""
    if (
        instance.state in UP_STATES
        and instance.failures
        and instance.started_at is not None
        and is_good_start(service, instance.started_at, now)
    ):
        return replace(instance, failures=0)
    return instance


def stop_requested(instance: Instance) -> Instance:
    """Return the instance being stopped on purpose; one with no process is stopped now."""
    if instance.state in UP_STATES:
        return replace(instance, stop_requested=True)
    return replace(
        instance, state=InstanceState.STOPPED, reason="stopped", restart_at=None, pid=None
    )


def exited(
    instance: Instance,
    service: ServiceDefinition,
    exit_code: int,
    now: datetime,
    *,
    cause: str = "",
) -> Exit:
    """Decide what follows the end of the instance's process (or its failure to start).

    A process up `healthy_after` made a good start: its end is not a failed
    start and the count of failed starts begins again. Any other end of a
    process that is to be restarted is one more failed start, and the one
    after `restart_attempts` restarts is fatal.
    """
    base = replace(instance, pid=None, last_exit_code=exit_code, probe_failures=0, restart_at=None)
    if instance.stop_requested:
        done = replace(base, state=InstanceState.STOPPED, reason="stopped", stop_requested=False)
        return Exit(done, EndReason.STOPPED, None)
    unhealthy = instance.state is InstanceState.UNHEALTHY
    failed = unhealthy or exit_code != 0
    end_reason = (
        EndReason.UNHEALTHY if unhealthy else EndReason.FAILED if failed else EndReason.SUCCESS
    )
    good = instance.started_at is not None and is_good_start(service, instance.started_at, now)
    failures = 0 if good else instance.failures
    wants_restart = service.restart is RestartPolicy.ALWAYS or (
        service.restart is RestartPolicy.ON_FAILURE and failed
    )
    how = cause or ("became unhealthy" if unhealthy else f"exited with code {exit_code}")
    if not wants_restart:
        if failed:
            fatal = replace(base, state=InstanceState.FATAL, reason=how, failures=failures + 1)
            return Exit(fatal, end_reason, None)
        return Exit(replace(base, state=InstanceState.STOPPED, reason=how), end_reason, None)
    if not good:
        failures += 1
        if failures > service.restart_attempts:
            starts = "1 failed start" if failures == 1 else f"{failures} failed starts in a row"
            reason = f"{how}; gave up after {starts}"
            fatal = replace(base, state=InstanceState.FATAL, reason=reason, failures=failures)
            return Exit(fatal, end_reason, None)
    delay = restart_delay(service, failures)
    waiting = replace(
        base,
        state=InstanceState.BACKOFF,
        reason=f"{how}; restarting in {_seconds(delay)}",
        failures=failures,
        restart_at=now + delay,
    )
    return Exit(waiting, end_reason, delay)


def spawn_failed(
    instance: Instance, service: ServiceDefinition, message: str, now: datetime
) -> Exit:
    """Decide what follows a process that could not be started: a failed start (exit 127)."""
    fresh = replace(instance, started_at=None, state=InstanceState.STARTING)
    result = exited(fresh, service, EXIT_START_FAILED, now, cause=f"could not start: {message}")
    return replace(result, end_reason=EndReason.START_FAILED)


def _seconds(delay: timedelta) -> str:
    return f"{delay.total_seconds():g}s"


def is_ready(service: ServiceDefinition, instances: Sequence[Instance]) -> bool:
    """Return whether dependants of `service` may start: every instance healthy, or running.

    Running is enough only for a service without a health check.
    """
    wanted = InstanceState.HEALTHY if service.health_check else InstanceState.RUNNING
    return bool(instances) and all(instance.state is wanted for instance in instances)


# ----- order ----------------------------------------------------------------------


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return a dependency cycle as `[a, b, a]`, or None; names missing from `graph` are ignored.

    The search starts from names in sorted order, so the same config always
    reports the same cycle, beginning at its first name.
    """
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            name, position = stack.pop()
            if position == 0:
                path.append(name)
                on_path.add(name)
            edges = [edge for edge in graph.get(name, ()) if edge in graph]
            if position < len(edges):
                stack.append((name, position + 1))
                target = edges[position]
                if target in on_path:
                    return [*path[path.index(target) :], target]
                if target not in done:
                    stack.append((target, 0))
                continue
            done.add(name)
            on_path.discard(name)
            path.pop()
    return None


def start_order(services: Mapping[str, ServiceDefinition]) -> list[str]:
    """Return service names in start order: dependencies first, then lower priority, then name.

    The definitions must hold no cycle (the config refuses one); a dependency
    not among `services` does not hold anything back.
    """
    blockers = {
        name: {dep for dep in service.depends_on if dep in services}
        for name, service in services.items()
    }
    dependants: dict[str, list[str]] = {name: [] for name in services}
    for name, deps in blockers.items():
        for dep in deps:
            dependants[dep].append(name)
    ready = [(services[name].priority, name) for name, deps in blockers.items() if not deps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for dependant in dependants[name]:
            blockers[dependant].discard(name)
            if not blockers[dependant]:
                heapq.heappush(ready, (services[dependant].priority, dependant))
    if len(order) != len(services):
        raise ValueError(f"dependency cycle among {sorted(set(services) - set(order))}")
    return order


def stop_order(services: Mapping[str, ServiceDefinition]) -> list[str]:
    """Return service names in shutdown order: the start order reversed."""
    return start_order(services)[::-1]


# ----- reload ---------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceChanges:
    """What a reload does to services: restart changed, start added, stop removed."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def diff_services(
    old: Mapping[str, ServiceDefinition], new: Mapping[str, ServiceDefinition]
) -> ServiceChanges:
    """Return which services a reload adds, removes, changes (any key) or leaves untouched."""
    kept = set(old) & set(new)
    return ServiceChanges(
        added=sorted(set(new) - set(old)),
        removed=sorted(set(old) - set(new)),
        changed=sorted(name for name in kept if old[name] != new[name]),
        unchanged=sorted(name for name in kept if old[name] == new[name]),
    )
