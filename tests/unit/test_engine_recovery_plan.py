"""Recovery and retries as pure plans over stored runs: no processes, a fixed clock."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from runyard import __version__
from runyard.domain.models import (
    EXIT_CRASHED,
    EXIT_NOT_RUN,
    EndReason,
    RetryBackoff,
    Run,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.engine.recovery import crashed_ids, plan_recovery, plan_takeover
from runyard.engine.runs import ended, retry_of

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
CRASH_LINE = "Crashed: the daemon stopped while the run was running."


def stored(
    run_id: str,
    status: RunStatus,
    task: str = "t",
    *,
    start_at: datetime | None = None,
    retry_attempt: int = 0,
    input_size: int | None = None,
) -> Run:
    return Run(
        id=run_id,
        task_name=task,
        status=status,
        created_at=T0,
        triggered_by=TriggeredBy.API,
        start_at=start_at,
        retry_attempt=retry_attempt,
        description="runyard 1.0: triggered through the API.",
        input_size=input_size,
    )


TASKS = {"t": TaskDefinition(name="t", run="true")}


def test_runs_recorded_running_or_in_the_start_log_had_started() -> None:
    leftovers = [
        stored("running", RunStatus.RUNNING),
        stored("starting", RunStatus.PENDING),
        stored("waiting", RunStatus.PENDING),
    ]
    assert crashed_ids(leftovers, {"starting", "unknown"}) == {"running", "starting"}


def test_a_started_run_ends_crashed_with_the_groups_killed_for_it() -> None:
    run = stored("r1", RunStatus.RUNNING, start_at=T0 + timedelta(minutes=1))
    plan = plan_recovery([run], {"r1"}, {"r1": [4242, 4243]}, TASKS, NOW)

    [crashed] = plan.updates
    assert (crashed.status, crashed.end_reason, crashed.exit_code) == (
        RunStatus.ENDED,
        EndReason.CRASHED,
        EXIT_CRASHED,
    )
    assert (crashed.start_at, crashed.end_at) == (T0 + timedelta(minutes=1), NOW)
    assert crashed.description == (
        "runyard 1.0: triggered through the API.\n"
        f"{CRASH_LINE}\n"
        "Processes it left running (process group 4242, 4243) were killed."
    )
    assert (plan.inserts, plan.pending, plan.retried) == ([], [], [])


def test_a_run_that_crashed_while_starting_gets_the_recovery_time_as_its_start() -> None:
    run = stored("r1", RunStatus.PENDING)
    plan = plan_recovery([run], {"r1"}, {}, TASKS, NOW)
    [crashed] = plan.updates
    assert (crashed.start_at, crashed.end_at) == (NOW, NOW)
    assert crashed.description.endswith(CRASH_LINE)


def test_pending_runs_are_queued_in_order_and_those_of_removed_tasks_are_skipped() -> None:
    leftovers = [
        stored("p1", RunStatus.PENDING),
        stored("gone", RunStatus.PENDING, task="removed"),
        stored("p2", RunStatus.PENDING),
    ]
    plan = plan_recovery(leftovers, set(), {}, TASKS, NOW)
    assert [run.id for run in plan.pending] == ["p1", "p2"]
    [skipped] = plan.updates
    assert (skipped.id, skipped.end_reason, skipped.exit_code, skipped.end_at) == (
        "gone",
        EndReason.SKIPPED,
        EXIT_NOT_RUN,
        NOW,
    )
    assert skipped.description.endswith("Skipped.\nTask 'removed' is no longer in the config.")


def test_a_crashed_run_of_a_retrying_task_is_retried_after_its_delay() -> None:
    tasks = {
        "t": TaskDefinition(
            name="t", run="true", retry_attempts=3, retry_delay=timedelta(seconds=30)
        )
    }
    leftovers = [
        stored("r1", RunStatus.RUNNING, retry_attempt=1, input_size=2000),
        stored("p1", RunStatus.PENDING),
    ]
    plan = plan_recovery(leftovers, {"r1"}, {}, tasks, NOW)
    [retry] = plan.inserts
    assert plan.pending == [retry, leftovers[1]]
    assert plan.retried == [(plan.updates[0], retry)]
    assert (retry.status, retry.retry_attempt, retry.retry_of_run_id) == (
        RunStatus.PENDING,
        2,
        "r1",
    )
    assert (retry.created_at, retry.not_before, retry.input_size) == (
        NOW,
        NOW + timedelta(seconds=30),
        2000,
    )
    assert retry.description == (
        f"runyard {__version__}: triggered through the API, retry 2 of run r1."
    )

    linked = dataclasses.replace(retry, description="linked")
    plan.replace_retry(retry, linked)
    assert plan.inserts == [linked]
    assert plan.pending == [linked, leftovers[1]]


def test_a_crashed_run_of_a_task_no_longer_configured_is_not_retried() -> None:
    plan = plan_recovery([stored("r1", RunStatus.RUNNING, task="gone")], {"r1"}, {}, {}, NOW)
    assert [run.end_reason for run in plan.updates] == [EndReason.CRASHED]
    assert plan.inserts == []


def failed(attempt: int, reason: EndReason = EndReason.FAILED) -> Run:
    return ended(stored("f", RunStatus.RUNNING, retry_attempt=attempt), reason, 1, NOW)


def test_retries_wait_as_their_backoff_says_until_the_attempts_run_out() -> None:
    task = TaskDefinition(
        name="t",
        run="true",
        retry_attempts=3,
        retry_delay=timedelta(seconds=10),
        retry_backoff=RetryBackoff.EXPONENTIAL,
    )
    delays = []
    for attempt in range(3):
        retry = retry_of(failed(attempt), task, NOW)
        assert retry is not None and retry.retry_attempt == attempt + 1
        assert retry.not_before is not None
        delays.append(retry.not_before - NOW)
    assert delays == [timedelta(seconds=10), timedelta(seconds=20), timedelta(seconds=40)]
    assert retry_of(failed(3), task, NOW) is None


def test_only_failure_like_ends_are_retried() -> None:
    task = TaskDefinition(name="t", run="true", retry_attempts=1)
    assert retry_of(failed(0, EndReason.SUCCESS), task, NOW) is None
    assert retry_of(failed(0, EndReason.STOPPED), task, NOW) is None
    assert retry_of(failed(0, EndReason.TIMEOUT), task, NOW) is not None


def test_an_ended_run_gets_one_closing_block_and_storable_text() -> None:
    run = stored("r", RunStatus.RUNNING, start_at=T0)
    end = ended(
        run,
        EndReason.FAILED,
        3,
        T0 + timedelta(seconds=2),
        duration=timedelta(seconds=2),
        stderr_tail=["bad\x00byte"],
        notes=["a note"],
        output_data={},
    )
    assert (end.status, end.exit_code, end.output_data) == (RunStatus.ENDED, 3, {})
    lines = end.description.split("\n")
    assert lines[0] == "runyard 1.0: triggered through the API."
    assert lines[1] == "Failed after 2.0s with exit code 3."
    assert "\x00" not in end.description and "bad\ufffdbyte" in end.description
    assert lines[-1] == "a note"


def test_a_dead_nodes_runs_end_crashed_naming_it_and_retry_on_the_taker() -> None:
    renewed = NOW - timedelta(seconds=20)
    task = TaskDefinition(name="t", run="true", retry_attempts=1, retry_delay=timedelta(0))
    running = dataclasses.replace(
        stored("R", RunStatus.RUNNING, start_at=T0), node="dead", input_size=None
    )
    waiting = dataclasses.replace(stored("P", RunStatus.PENDING), node="dead")
    gone = dataclasses.replace(stored("G", RunStatus.PENDING, task="gone"), node="dead")
    in_file = dataclasses.replace(stored("F", RunStatus.PENDING, input_size=5000), node="dead")
    running_in_file = dataclasses.replace(
        stored("RF", RunStatus.RUNNING, start_at=T0, input_size=5000), node="dead"
    )
    plan = plan_takeover(
        [running, waiting, gone, in_file, running_in_file], "dead", renewed, "me", {"t": task}, NOW
    )
    by_id = {run.id: run for run in plan.updates}
    crashed = by_id["R"]
    assert (crashed.end_reason, crashed.exit_code, crashed.end_at) == (
        EndReason.CRASHED,
        EXIT_CRASHED,
        NOW,
    )
    assert crashed.node == "dead"  # the node that started it, for good
    assert crashed.description.endswith(
        "Node 'dead' stopped renewing its lease (last renewed 2025-03-01T12:59:40+00:00); "
        "node 'me' ended the run."
    )
    # A retry per its task's policy, queued on the taker.
    [retry] = plan.inserts
    assert (retry.retry_of_run_id, retry.node, retry.status) == ("R", "me", RunStatus.PENDING)
    # Pending runs move to the taker, unless no node here can run them.
    assert [(run.id, run.node) for run in plan.adopted] == [("P", "me")]
    assert by_id["G"].end_reason is EndReason.SKIPPED
    assert by_id["F"].end_reason is EndReason.SKIPPED
    assert "input data is a file on that node" in by_id["F"].description
    assert by_id["F"].exit_code == EXIT_NOT_RUN
    # Input in a file on the dead node: crashed, and not retried.
    assert by_id["RF"].end_reason is EndReason.CRASHED
    assert by_id["RF"].description.endswith("Not retried: its input data is a file on node 'dead'.")


def test_a_service_lifetime_left_running_ends_crashed_and_is_never_retried_or_queued() -> None:
    # Its task_name is a service's: no task of that name, yet not a vanished task.
    lifetime = dataclasses.replace(
        stored("web-0", RunStatus.RUNNING, task="web", start_at=T0),
        triggered_by=TriggeredBy.SERVICE,
        replica_index=1,
    )
    retrying = {"web": TaskDefinition(name="web", run="true", retry_attempts=3)}
    for tasks in ({}, TASKS, retrying):
        plan = plan_recovery([lifetime], {"web-0"}, {"web-0": [4242]}, tasks, NOW)
        (crashed,) = plan.updates
        assert crashed.end_reason is EndReason.CRASHED
        assert crashed.exit_code == EXIT_CRASHED
        assert crashed.replica_index == 1 and crashed.start_at == T0
        assert "(process group 4242) were killed" in crashed.description
        assert plan.inserts == [] and plan.pending == [] and plan.retried == []


def test_a_dead_nodes_service_lifetime_ends_crashed_and_is_not_retried() -> None:
    lifetime = dataclasses.replace(
        stored("web-0", RunStatus.RUNNING, task="web", start_at=T0),
        triggered_by=TriggeredBy.SERVICE,
        node="dead",
    )
    retrying = {"web": TaskDefinition(name="web", run="true", retry_attempts=3)}
    plan = plan_takeover([lifetime], "dead", T0, "me", retrying, NOW)
    (crashed,) = plan.updates
    assert crashed.end_reason is EndReason.CRASHED
    assert plan.inserts == [] and plan.adopted == []
