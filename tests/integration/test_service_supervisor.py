"""ServiceSupervisor with real processes: restarts, backoff, fatal, health, order, reload."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from runyard.domain.models import LogOnFull, RetryBackoff
from runyard.domain.services import (
    HealthCheck,
    InstanceState,
    ProbeKind,
    RestartPolicy,
    ServiceDefinition,
)
from runyard.services.supervisor import ServiceLifetime, ServiceSupervisor
from runyard.store.logs import read_lines

pytestmark = pytest.mark.anyio

MS = timedelta(milliseconds=1)
WAIT = 20  # seconds a test waits for a state before it fails


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def service(name: str, run: str, **fields: object) -> ServiceDefinition:
    fields.setdefault("graceful_stop", timedelta(seconds=2))
    fields.setdefault("restart_delay", 50 * MS)
    return ServiceDefinition(name=name, run=run, **fields)  # type: ignore[arg-type]


def file_check(path: Path, **fields: object) -> HealthCheck:
    fields.setdefault("interval", 50 * MS)
    fields.setdefault("failures", 2)
    return HealthCheck(kind=ProbeKind.RUN, target=f"test -f {path}", **fields)  # type: ignore[arg-type]


class Harness:
    def __init__(self, tmp_path: Path, services: list[ServiceDefinition]) -> None:
        self.logs = tmp_path / "logs"
        self.ended: list[ServiceLifetime] = []
        self.starting: list[tuple[str, str, int]] = []
        self.supervisor = ServiceSupervisor(
            {s.name: s for s in services},
            logs_dir=self.logs,
            on_starting=lambda run_id, s, index: self.starting.append((run_id, s.name, index)),
            on_ended=self.ended.append,
        )

    def state(self, name: str, index: int = 0) -> InstanceState:
        return self.supervisor.instances(name)[index].state

    def pid(self, name: str, index: int = 0) -> int | None:
        return self.supervisor.instances(name)[index].pid

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait for `condition`, checked at each state change and every 50 ms (files)."""
        async with asyncio.timeout(WAIT):
            while not condition():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.supervisor.wait_until(condition), 0.05)

    async def until_state(self, name: str, *states: InstanceState) -> None:
        await self.until(lambda: all(i.state in states for i in self.supervisor.instances(name)))

    def lifetimes(self, name: str) -> list[ServiceLifetime]:
        return [lifetime for lifetime in self.ended if lifetime.service == name]

    def log(self, lifetime: ServiceLifetime) -> list[str]:
        return [line.text for line in read_lines(self.logs / f"{lifetime.run_id}.log")]


@pytest.fixture
async def harnesses(tmp_path: Path) -> AsyncIterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for harness in made:
        await harness.supervisor.stop_all()


@pytest.fixture
def make(tmp_path: Path, harnesses: list[Harness]) -> Callable[..., Harness]:
    def build(*services: ServiceDefinition) -> Harness:
        harness = Harness(tmp_path, list(services))
        harnesses.append(harness)
        return harness

    return build


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_crash_loop_backs_off_then_is_fatal_and_a_manual_start_clears_it(
    make: Callable[..., Harness],
) -> None:
    crash = service(
        "crash",
        "echo boom >&2; exit 3",
        restart_backoff=RetryBackoff.EXPONENTIAL,
        restart_attempts=3,
    )
    h = make(crash)
    h.supervisor.start_all()
    await h.until_state("crash", InstanceState.FATAL)
    lifetimes = h.lifetimes("crash")
    assert [(x.exit_code, x.end_reason, x.state_after) for x in lifetimes] == [
        (3, "failed", InstanceState.BACKOFF),
        (3, "failed", InstanceState.BACKOFF),
        (3, "failed", InstanceState.BACKOFF),
        (3, "failed", InstanceState.FATAL),
    ]
    assert [x.description for x in lifetimes] == [
        "exited with code 3; restarting in 0.05s",
        "exited with code 3; restarting in 0.1s",
        "exited with code 3; restarting in 0.2s",
        "exited with code 3; gave up after 4 failed starts in a row",
    ]
    # Each restart came no sooner than its delay after the end before it.
    for before, after, delay in zip(lifetimes, lifetimes[1:], (50, 100, 200), strict=False):
        assert after.started_at - before.ended_at >= delay * MS
    assert [x.restarts for x in lifetimes] == [0, 1, 2, 3]
    # Each run id was announced before its spawn, and each is a run of its own.
    assert h.starting == [(x.run_id, "crash", 0) for x in lifetimes]
    assert len({x.run_id for x in lifetimes}) == 4
    assert h.log(lifetimes[0]) == ["boom"]
    (instance,) = h.supervisor.instances("crash")
    assert (instance.failures, instance.pid, instance.last_exit_code) == (4, None, 3)

    # Fatal stays fatal for start_all; a manual start forgets the failed starts.
    h.supervisor.start_all()
    assert h.state("crash") is InstanceState.FATAL
    h.supervisor.start("crash")
    await h.until(lambda: len(h.lifetimes("crash")) == 5)
    assert h.lifetimes("crash")[4].description == "exited with code 3; restarting in 0.05s"
    await h.supervisor.stop("crash")
    assert h.state("crash") is InstanceState.STOPPED


async def test_a_dependency_never_healthy_keeps_the_dependant_waiting(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    ready = tmp_path / "db-ready"
    db = service("db", "sleep 60", health_check=file_check(ready, failures=1000))
    web = service("web", "sleep 60", depends_on=("db",))
    h = make(db, web)
    h.supervisor.start_all()
    await h.until(lambda: h.supervisor.instances("db")[0].probe_failures >= 3)
    (waiting,) = h.supervisor.instances("web")
    assert (waiting.state, waiting.reason, waiting.pid) == (
        InstanceState.WAITING,
        "waiting for db",
        None,
    )
    assert h.state("db") is InstanceState.STARTING and alive(h.pid("db"))
    assert h.lifetimes("web") == []
    ready.touch()
    await h.until_state("web", InstanceState.RUNNING)
    assert h.state("db") is InstanceState.HEALTHY
    assert alive(h.pid("web"))


async def test_a_failing_health_check_restarts_the_instance_as_unhealthy(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    ok = tmp_path / "ok"
    ok.touch()
    # The start period covers the restart until the file is back; failures
    # after a passing probe count at once.
    check = file_check(ok, start_period=timedelta(seconds=10))
    web = service("web", "sleep 60", health_check=check)
    h = make(web)
    h.supervisor.start_all()
    await h.until_state("web", InstanceState.HEALTHY)
    first_pid = h.pid("web")
    ok.unlink()
    await h.until(lambda: len(h.lifetimes("web")) == 1)
    (lifetime,) = h.lifetimes("web")
    assert (lifetime.end_reason, lifetime.exit_code, lifetime.state_after) == (
        "unhealthy",
        128 + 15,  # SIGTERM, the stop signal
        InstanceState.BACKOFF,
    )
    assert lifetime.description == "became unhealthy; restarting in 0.05s"
    assert not alive(first_pid)
    await h.until(lambda: h.pid("web") not in (None, first_pid))
    ok.touch()
    await h.until_state("web", InstanceState.HEALTHY)
    assert h.supervisor.instances("web")[0].restarts == 1


async def test_stop_all_goes_in_reverse_dependency_order(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    order = tmp_path / "order"

    def stopping(name: str, *deps: str) -> ServiceDefinition:
        trap = f"trap 'echo {name} >> {order}; exit 0' TERM; touch {tmp_path}/{name}.up"
        return service(name, f"{trap}; while :; do sleep 0.05; done", depends_on=deps)

    h = make(stopping("a"), stopping("b", "a"), stopping("c", "b"), stopping("d"))
    h.supervisor.start_all()
    # Up with the trap set (the file is written after it), not merely spawned.
    await h.until(lambda: all((tmp_path / f"{name}.up").exists() for name in "abcd"))
    await h.supervisor.stop_all()
    written = order.read_text().split()
    assert sorted(written) == ["a", "b", "c", "d"]
    chain = [name for name in written if name != "d"]
    assert chain == ["c", "b", "a"]
    assert {x.end_reason for x in h.ended} == {"stopped"}
    assert all(h.state(name) is InstanceState.STOPPED for name in "abcd")


async def test_reload_restarts_the_changed_service_and_keeps_the_other(
    make: Callable[..., Harness],
) -> None:
    keep = service("keep", "sleep 60")
    change = service("change", "sleep 60")
    gone = service("gone", "sleep 60")
    h = make(keep, change, gone)
    h.supervisor.start_all()
    for name in ("keep", "change", "gone"):
        await h.until_state(name, InstanceState.RUNNING)
    kept_pid, changed_pid, gone_pid = h.pid("keep"), h.pid("change"), h.pid("gone")
    added = service("added", "sleep 60")
    await h.supervisor.reload(
        {"keep": keep, "change": replace(change, run="sleep 61"), "added": added}
    )
    await h.until_state("change", InstanceState.RUNNING)
    await h.until_state("added", InstanceState.RUNNING)
    assert h.pid("keep") == kept_pid
    assert h.pid("change") not in (None, changed_pid)
    assert not alive(changed_pid) and not alive(gone_pid)
    assert sorted(h.supervisor.services) == ["added", "change", "keep"]
    assert sorted((x.service, x.end_reason) for x in h.ended) == [
        ("change", "stopped"),
        ("gone", "stopped"),
    ]


async def test_each_instance_knows_its_index(make: Callable[..., Harness], tmp_path: Path) -> None:
    run = f'echo "$RUNYARD_SERVICE $RUNYARD_REPLICA_INDEX $GREETING" > {tmp_path}/i$RUNYARD_REPLICA_INDEX; sleep 60'  # noqa: E501
    h = make(service("web", run, instances=3, env=(("GREETING", "hi"),)))
    h.supervisor.start_all()
    await h.until_state("web", InstanceState.RUNNING)
    files = [tmp_path / f"i{i}" for i in range(3)]
    await h.until(lambda: all(f.exists() and f.read_text().endswith("\n") for f in files))
    assert [(tmp_path / f"i{i}").read_text() for i in range(3)] == [
        f"web {i} hi\n" for i in range(3)
    ]
    assert len({h.pid("web", i) for i in range(3)}) == 3


async def test_stops_in_backoff_and_in_waiting_are_immediate(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    never = file_check(tmp_path / "never")
    slow = service("slow", "exit 1", restart_delay=timedelta(seconds=60), health_check=never)
    blocked = service("blocked", "sleep 60", depends_on=("slow",))
    h = make(slow, blocked)
    h.supervisor.start_all()
    await h.until_state("slow", InstanceState.BACKOFF)
    assert h.state("blocked") is InstanceState.WAITING
    async with asyncio.timeout(5):
        await h.supervisor.stop_all()
    assert (h.state("slow"), h.state("blocked")) == (InstanceState.STOPPED, InstanceState.STOPPED)
    assert [x.end_reason for x in h.ended] == ["failed"]


async def test_a_service_that_cannot_start_is_a_failed_start(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    h = make(service("web", "sleep 60", working_dir=str(missing), restart_attempts=1))
    h.supervisor.start_all()
    await h.until_state("web", InstanceState.FATAL)
    assert [(x.end_reason, x.exit_code) for x in h.ended] == [
        ("start_failed", 127),
        ("start_failed", 127),
    ]
    assert h.ended[-1].description == (
        "could not start: No such file or directory; gave up after 2 failed starts in a row"
    )
    assert h.log(h.ended[0]) == ["[runyard] could not start: No such file or directory"]


async def test_an_unreadable_env_file_is_a_failed_start(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    h = make(service("web", "sleep 60", env_file=str(tmp_path / "no.env"), restart_attempts=0))
    h.supervisor.start_all()
    await h.until_state("web", InstanceState.FATAL)
    assert [(x.end_reason, x.description) for x in h.ended] == [
        (
            "start_failed",
            "could not start: No such file or directory; gave up after 1 failed start",
        )
    ]
    assert [run_id for run_id, _, _ in h.starting] == [h.ended[0].run_id]


async def test_restart_on_failure_leaves_a_clean_exit_stopped(
    make: Callable[..., Harness],
) -> None:
    h = make(service("once", "exit 0", restart=RestartPolicy.ON_FAILURE))
    h.supervisor.start_all()
    await h.until_state("once", InstanceState.STOPPED)
    await h.until(lambda: len(h.ended) == 1)
    assert (h.ended[0].end_reason, h.ended[0].state_after) == ("success", InstanceState.STOPPED)


async def test_a_service_ignoring_its_stop_signal_is_killed_after_graceful_stop(
    make: Callable[..., Harness], tmp_path: Path
) -> None:
    up = tmp_path / "up"
    run = f"trap '' TERM; touch {up}; while :; do sleep 0.05; done"
    h = make(service("stubborn", run, graceful_stop=200 * MS))
    h.supervisor.start_all()
    await h.until(up.exists)  # the trap is set
    pid = h.pid("stubborn")
    await h.supervisor.stop("stubborn")
    assert not alive(pid)
    assert [(x.end_reason, x.exit_code) for x in h.ended] == [("stopped", 128 + 9)]


async def test_autostart_false_stays_stopped_until_started(make: Callable[..., Harness]) -> None:
    h = make(service("manual", "sleep 60", autostart=False))
    h.supervisor.start_all()
    await asyncio.sleep(0.2)
    assert h.state("manual") is InstanceState.STOPPED and h.ended == []
    h.supervisor.start("manual")
    await h.until_state("manual", InstanceState.RUNNING)
    await h.supervisor.restart("manual")
    await h.until_state("manual", InstanceState.RUNNING)
    assert [x.end_reason for x in h.ended] == ["stopped"]


async def test_a_full_log_with_log_on_full_kill_ends_as_log_overflow(
    make: Callable[..., Harness],
) -> None:
    flood = service(
        "flood",
        "while :; do echo 0123456789012345678901234567890123456789; done",
        log_max_size=1024,
        log_on_full=LogOnFull.KILL,
        restart_attempts=0,
    )
    h = make(flood)
    h.supervisor.start_all()
    await h.until_state("flood", InstanceState.FATAL)
    ((end_reason, exit_code, description),) = [
        (x.end_reason, x.exit_code, x.description) for x in h.ended
    ]
    assert (end_reason, exit_code) == ("log_overflow", 128 + 9)
    assert description == "the log reached log_max_size; gave up after 1 failed start"
