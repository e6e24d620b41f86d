"""Services' pure rules: the instance state machine, restart delays, order, reload diff."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from runyard.domain.models import RetryBackoff
from runyard.domain.services import (
    MAX_RESTART_DELAY,
    HealthCheck,
    Instance,
    InstanceState,
    ProbeKind,
    RestartPolicy,
    ServiceChanges,
    ServiceDefinition,
    diff_services,
    exited,
    find_cycle,
    is_ready,
    probed,
    restart_delay,
    settled,
    spawn_failed,
    spawned,
    start_order,
    start_requested,
    stop_order,
    stop_requested,
)

T0 = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
WEB = ServiceDefinition(name="web", run="serve")
CHECKED = replace(
    WEB,
    health_check=HealthCheck(
        kind=ProbeKind.TCP, target="127.0.0.1:1", failures=3, start_period=timedelta(seconds=30)
    ),
)


def up(service: ServiceDefinition = WEB, at: datetime = T0, **fields: object) -> Instance:
    started = start_requested(Instance("web", 0), deps_ready=True)
    return replace(spawned(started, service, 100, at, restart=False), **fields)  # type: ignore[arg-type]


# ----- restart delays ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "delay", "failures", "expected"),
    [
        (RetryBackoff.CONSTANT, 2 * S, 0, 2 * S),
        (RetryBackoff.CONSTANT, 2 * S, 1, 2 * S),
        (RetryBackoff.CONSTANT, 2 * S, 7, 2 * S),
        (RetryBackoff.LINEAR, 2 * S, 1, 2 * S),
        (RetryBackoff.LINEAR, 2 * S, 3, 6 * S),
        (RetryBackoff.LINEAR, 100 * S, 4, 300 * S),  # capped at 5 min
        (RetryBackoff.EXPONENTIAL, 1 * S, 0, 1 * S),
        (RetryBackoff.EXPONENTIAL, 1 * S, 1, 1 * S),
        (RetryBackoff.EXPONENTIAL, 1 * S, 2, 2 * S),
        (RetryBackoff.EXPONENTIAL, 1 * S, 5, 16 * S),
        (RetryBackoff.EXPONENTIAL, 1 * S, 9, 256 * S),
        (RetryBackoff.EXPONENTIAL, 1 * S, 10, MAX_RESTART_DELAY),
        (RetryBackoff.EXPONENTIAL, 1 * S, 100, MAX_RESTART_DELAY),  # no overflow
        (RetryBackoff.EXPONENTIAL, timedelta(0), 5, timedelta(0)),
    ],
)
def test_restart_delay(
    backoff: RetryBackoff, delay: timedelta, failures: int, expected: timedelta
) -> None:
    service = replace(WEB, restart_backoff=backoff, restart_delay=delay)
    assert restart_delay(service, failures) == expected


# ----- the state machine ----------------------------------------------------------------


def test_a_start_waits_for_dependencies_then_starts() -> None:
    waiting = start_requested(Instance("web", 0), deps_ready=False, waiting_for=["db", "queue"])
    assert (waiting.state, waiting.reason) == (InstanceState.WAITING, "waiting for db, queue")
    starting = start_requested(waiting, deps_ready=True)
    assert (starting.state, starting.reason) == (InstanceState.STARTING, "")


def test_a_spawned_instance_without_check_runs_and_with_check_starts() -> None:
    assert up().state is InstanceState.RUNNING
    checked = up(CHECKED)
    assert (checked.state, checked.pid, checked.started_at, checked.restarts) == (
        InstanceState.STARTING,
        100,
        T0,
        0,
    )


def test_probes_during_the_start_period_do_not_count() -> None:
    instance = up(CHECKED)
    for seconds in (5, 10, 29):
        instance = probed(instance, CHECKED, False, "refused", T0 + seconds * S)
    assert (instance.state, instance.probe_failures, instance.last_probe) == (
        InstanceState.STARTING,
        0,
        "refused",
    )
    instance = probed(instance, CHECKED, False, "refused", T0 + 30 * S)
    instance = probed(instance, CHECKED, False, "refused", T0 + 40 * S)
    assert (instance.state, instance.probe_failures) == (InstanceState.STARTING, 2)
    instance = probed(instance, CHECKED, False, "refused", T0 + 50 * S)
    assert instance.state is InstanceState.UNHEALTHY
    assert instance.reason == "3 health checks failed in a row: refused"


def test_a_passing_probe_makes_healthy_and_resets_the_count() -> None:
    instance = probed(up(CHECKED), CHECKED, True, "200 OK", T0 + S)
    assert (instance.state, instance.last_probe_ok, instance.last_probe) == (
        InstanceState.HEALTHY,
        True,
        "200 OK",
    )
    instance = probed(instance, CHECKED, False, "timed out", T0 + 2 * S)
    instance = probed(instance, CHECKED, False, "timed out", T0 + 3 * S)
    assert (instance.state, instance.probe_failures) == (InstanceState.HEALTHY, 2)
    instance = probed(instance, CHECKED, True, "200 OK", T0 + 4 * S)
    assert instance.probe_failures == 0
    for second in (5, 6, 7):
        instance = probed(instance, CHECKED, False, "500", T0 + second * S)
    # Failures after the first pass count even inside the start period.
    assert instance.state is InstanceState.UNHEALTHY


def test_late_probe_results_change_nothing() -> None:
    unhealthy = replace(up(CHECKED), state=InstanceState.UNHEALTHY)
    assert probed(unhealthy, CHECKED, True, "ok", T0) == unhealthy
    stopping = stop_requested(up(CHECKED))
    assert probed(stopping, CHECKED, True, "ok", T0) == stopping
    assert probed(up(), WEB, False, "x", T0) == up()


def test_a_crash_loop_backs_off_then_is_fatal() -> None:
    """restart_attempts = 3: three restarts after failed starts; the fourth failure is fatal."""
    service = replace(WEB, restart_attempts=3, restart_delay=S)
    instance = up(service)
    delays = []
    for attempt in range(3):
        result = exited(instance, service, 1, T0 + 5 * S)
        assert result.end_reason == "failed"
        assert result.instance.state is InstanceState.BACKOFF
        assert result.instance.failures == attempt + 1
        delays.append(result.restart_in)
        instance = spawned(
            start_requested(result.instance, deps_ready=True), service, 200, T0, restart=True
        )
    assert delays == [S, 2 * S, 4 * S]
    assert instance.restarts == 3
    result = exited(instance, service, 1, T0 + 5 * S)
    assert (result.instance.state, result.restart_in, result.instance.failures) == (
        InstanceState.FATAL,
        None,
        4,
    )
    assert result.instance.reason == "exited with code 1; gave up after 4 failed starts in a row"


def test_backoff_state_says_when() -> None:
    result = exited(up(), WEB, 3, T0 + 5 * S)
    assert result.instance.restart_at == T0 + 6 * S
    assert result.instance.reason == "exited with code 3; restarting in 1s"
    assert (result.instance.pid, result.instance.last_exit_code) == (None, 3)


def test_zero_restart_attempts_makes_the_first_failed_start_fatal() -> None:
    service = replace(WEB, restart_attempts=0)
    fatal = exited(up(service), service, 1, T0 + S).instance
    assert (fatal.state, fatal.reason) == (
        InstanceState.FATAL,
        "exited with code 1; gave up after 1 failed start",
    )


def test_fatal_ignores_automatic_starts_and_a_manual_start_clears_it() -> None:
    fatal = replace(up(), state=InstanceState.FATAL, failures=4, pid=None)
    assert start_requested(fatal, deps_ready=True) == fatal
    revived = start_requested(fatal, deps_ready=True, manual=True)
    assert (revived.state, revived.failures) == (InstanceState.STARTING, 0)


def test_a_good_start_resets_the_failure_count() -> None:
    service = replace(WEB, healthy_after=timedelta(seconds=60))
    instance = up(service, failures=2)
    assert settled(instance, service, T0 + 59 * S).failures == 2
    assert settled(instance, service, T0 + 60 * S).failures == 0
    # An exit after a good start is not a failed start: the plain delay, count 0.
    result = exited(instance, service, 1, T0 + 61 * S)
    assert (result.instance.failures, result.restart_in) == (0, S)
    # An exit before healthy_after adds to the count.
    result = exited(instance, service, 1, T0 + 59 * S)
    assert (result.instance.failures, result.restart_in) == (3, 4 * S)


def test_restart_always_restarts_a_clean_exit_and_counts_it_when_early() -> None:
    result = exited(up(), WEB, 0, T0 + S)
    assert (result.end_reason, result.instance.state, result.instance.failures) == (
        "success",
        InstanceState.BACKOFF,
        1,
    )


@pytest.mark.parametrize(
    ("policy", "code", "state", "end_reason"),
    [
        (RestartPolicy.ON_FAILURE, 0, InstanceState.STOPPED, "success"),
        (RestartPolicy.ON_FAILURE, 2, InstanceState.BACKOFF, "failed"),
        (RestartPolicy.NEVER, 0, InstanceState.STOPPED, "success"),
        (RestartPolicy.NEVER, 2, InstanceState.FATAL, "failed"),
        (RestartPolicy.ALWAYS, 0, InstanceState.BACKOFF, "success"),
        (RestartPolicy.ALWAYS, 2, InstanceState.BACKOFF, "failed"),
    ],
)
def test_restart_policies(
    policy: RestartPolicy, code: int, state: InstanceState, end_reason: str
) -> None:
    service = replace(WEB, restart=policy)
    result = exited(up(service), service, code, T0 + S)
    assert (result.instance.state, result.end_reason) == (state, end_reason)
    assert (result.restart_in is not None) is (state is InstanceState.BACKOFF)


def test_an_unhealthy_instance_ends_as_unhealthy_and_restarts() -> None:
    service = replace(CHECKED, restart=RestartPolicy.ON_FAILURE)
    instance = replace(up(service), state=InstanceState.UNHEALTHY)
    result = exited(instance, service, 143, T0 + S)  # killed by SIGTERM, yet it failed
    assert (result.end_reason, result.instance.state) == ("unhealthy", InstanceState.BACKOFF)
    assert result.instance.reason == "became unhealthy; restarting in 1s"


def test_a_requested_stop_ends_as_stopped_whatever_the_code() -> None:
    stopping = stop_requested(up())
    assert stopping.state is InstanceState.RUNNING and stopping.stop_requested
    result = exited(stopping, WEB, 143, T0 + S)
    assert (result.end_reason, result.instance.state, result.restart_in) == (
        "stopped",
        InstanceState.STOPPED,
        None,
    )
    assert not result.instance.stop_requested


def test_stopping_an_instance_without_a_process_is_immediate() -> None:
    backoff = exited(up(), WEB, 1, T0 + S).instance
    stopped = stop_requested(backoff)
    assert (stopped.state, stopped.restart_at) == (InstanceState.STOPPED, None)
    waiting = start_requested(Instance("web", 0), deps_ready=False, waiting_for=["db"])
    assert stop_requested(waiting).state is InstanceState.STOPPED


def test_a_failed_spawn_is_a_failed_start() -> None:
    result = spawn_failed(up(failures=1), WEB, "No such file or directory: 'nope'", T0 + S)
    assert (result.end_reason, result.instance.failures, result.instance.last_exit_code) == (
        "start_failed",
        2,
        127,
    )
    assert result.instance.reason == (
        "could not start: No such file or directory: 'nope'; restarting in 2s"
    )


def test_readiness_of_a_dependency() -> None:
    running, healthy = up(), replace(up(CHECKED), state=InstanceState.HEALTHY)
    assert is_ready(WEB, [running, running])
    assert not is_ready(WEB, [running, replace(running, state=InstanceState.BACKOFF)])
    assert not is_ready(WEB, [])
    assert is_ready(CHECKED, [healthy])
    assert not is_ready(CHECKED, [up(CHECKED)])  # started, not yet healthy


# ----- order ------------------------------------------------------------------------------


def svc(name: str, *deps: str, priority: int = 0) -> ServiceDefinition:
    return ServiceDefinition(name=name, run="x", depends_on=deps, priority=priority)


def test_start_order_puts_dependencies_first_then_priority_then_name() -> None:
    services = {
        s.name: s
        for s in (
            svc("web", "db", "cache"),
            svc("db"),
            svc("cache", priority=-1),
            svc("worker", "db", priority=-5),
            svc("metrics", priority=10),
            svc("audit"),
        )
    }
    # worker has the lowest priority, yet waits for db.
    assert start_order(services) == ["cache", "audit", "db", "worker", "web", "metrics"]
    assert stop_order(services) == ["metrics", "web", "worker", "db", "audit", "cache"]


def test_start_order_ignores_dependencies_outside_the_set() -> None:
    assert start_order({"web": svc("web", "db")}) == ["web"]


def test_start_order_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="dependency cycle among"):
        start_order({"a": svc("a", "b"), "b": svc("b", "a")})


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({}, None),
        ({"a": ["b"], "b": []}, None),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"b": ["a"], "a": ["b"]}, ["a", "b", "a"]),
        ({"a": ["a"]}, ["a", "a"]),
        ({"x": ["y"], "y": ["z"], "z": ["y"]}, ["y", "z", "y"]),
        ({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, None),  # a diamond
        ({"a": ["missing"]}, None),
    ],
)
def test_find_cycle(graph: dict[str, list[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


# ----- reload -----------------------------------------------------------------------------


def test_diff_services() -> None:
    old = {"a": svc("a"), "b": svc("b"), "c": svc("c")}
    new = {"a": svc("a"), "b": replace(svc("b"), instances=2), "d": svc("d")}
    assert diff_services(old, new) == ServiceChanges(
        added=["d"], removed=["c"], changed=["b"], unchanged=["a"]
    )
    health = replace(svc("a"), health_check=HealthCheck(ProbeKind.TCP, "h:1"))
    assert diff_services({"a": health}, {"a": health}).unchanged == ["a"]
    longer = replace(health, health_check=HealthCheck(ProbeKind.TCP, "h:1", interval=S))
    assert diff_services({"a": health}, {"a": longer}).changed == ["a"]
