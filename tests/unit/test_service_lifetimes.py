"""A service instance's lifetime as a run: its row at the start, its end, the retention rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ulid import ULID

from runyard import __version__
from runyard.domain.models import EndReason, RunKind, RunStatus, TaskDefinition, TriggeredBy
from runyard.domain.services import InstanceState
from runyard.engine.retention import KeepRule, keep_rules
from runyard.services.lifetimes import (
    LIFETIMES_KEPT,
    NotedStart,
    crashed_unrecorded,
    ended_lifetime,
    fatal_detail,
    lifetime_run,
    read_note,
    start_note,
)
from runyard.services.supervisor import ServiceLifetime

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RUN_ID = "01J0000000000000000000WEB1"


def lifetime(
    end_reason: EndReason,
    state_after: InstanceState = InstanceState.BACKOFF,
    *,
    exit_code: int = 1,
    description: str = "exited with code 1; restarting in 2s",
    last_probe: str = "",
) -> ServiceLifetime:
    return ServiceLifetime(
        run_id=RUN_ID,
        service="web",
        index=1,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=42),
        exit_code=exit_code,
        end_reason=end_reason,
        state_after=state_after,
        restarts=3,
        description=description,
        last_probe=last_probe,
    )


def test_a_lifetime_is_recorded_running_as_a_run_of_kind_service() -> None:
    run = lifetime_run(RUN_ID, "web", 1, T0)
    assert (run.id, run.task_name, run.replica_index) == (RUN_ID, "web", 1)
    assert run.status is RunStatus.RUNNING
    assert run.triggered_by is TriggeredBy.SERVICE
    assert run.kind is RunKind.SERVICE
    assert run.created_at == run.start_at == T0
    assert run.description == f"runyard {__version__}: started instance 1 of service web."


@pytest.mark.parametrize(
    ("end", "daemon_stopping", "reason", "closing"),
    [
        (
            lifetime(EndReason.FAILED),
            False,
            EndReason.FAILED,
            [
                "Failed after 42.0s with exit code 1.",
                "Exited with code 1; restarting in 2s (instance now backoff).",
            ],
        ),
        (
            lifetime(
                EndReason.UNHEALTHY,
                exit_code=-15,
                description="became unhealthy; restarting in 1s",
                last_probe="HTTP 503 Service Unavailable",
            ),
            False,
            EndReason.UNHEALTHY,
            [
                "Stopped after 42.0s: its health check failed (exit code -15).",
                "Last health check: HTTP 503 Service Unavailable.",
                "Became unhealthy; restarting in 1s (instance now backoff).",
            ],
        ),
        (
            lifetime(
                EndReason.START_FAILED,
                InstanceState.FATAL,
                exit_code=127,
                description="could not start: No such file or directory; gave up after 1 "
                "failed start",
            ),
            False,
            EndReason.START_FAILED,
            [
                "Could not be started.",
                "Could not start: No such file or directory; gave up after 1 failed start "
                "(instance now fatal).",
            ],
        ),
        # An operator's stop stays `stopped`; the daemon's shutdown is `daemon_stopped`.
        (
            lifetime(EndReason.STOPPED, InstanceState.STOPPED, exit_code=-15, description="x"),
            False,
            EndReason.STOPPED,
            ["Stopped after 42.0s on request (exit code -15)."],
        ),
        (
            lifetime(EndReason.STOPPED, InstanceState.STOPPED, exit_code=-15, description="x"),
            True,
            EndReason.DAEMON_STOPPED,
            ["Stopped after 42.0s because the daemon shut down."],
        ),
        # Not a stop: the shutdown changes nothing.
        (
            lifetime(EndReason.SUCCESS, InstanceState.STOPPED, exit_code=0, description=""),
            True,
            EndReason.SUCCESS,
            ["Succeeded after 42.0s (exit code 0)."],
        ),
    ],
)
def test_a_lifetime_ends_with_its_exit_code_reason_and_why(
    end: ServiceLifetime, daemon_stopping: bool, reason: EndReason, closing: list[str]
) -> None:
    started = lifetime_run(RUN_ID, "web", 1, T0 + timedelta(milliseconds=2))
    run = ended_lifetime(started, end, daemon_stopping=daemon_stopping)
    assert run.status is RunStatus.ENDED
    assert run.end_reason is reason
    assert run.exit_code == end.exit_code
    assert run.start_at == T0  # the spawn's own time, a moment before the row's
    assert run.end_at == T0 + timedelta(seconds=42)
    assert run.description.splitlines() == [started.description, *closing]


def test_a_fatal_instance_is_told_with_its_reason_and_how_to_revive_it() -> None:
    end = lifetime(
        EndReason.FAILED,
        InstanceState.FATAL,
        description="exited with code 1; gave up after 4 failed starts in a row",
    )
    assert fatal_detail(end) == (
        "Instance 1 of service web is fatal: exited with code 1; gave up after 4 failed "
        "starts in a row. runyard will not start it again until it is started by hand "
        "(runyard start web)."
    )


def test_retention_keeps_the_tasks_rules_and_the_services_newest_lifetimes() -> None:
    tasks = [
        TaskDefinition(name="backup", run="true", keep_runs=5),
        TaskDefinition(name="report", run="true", keep_for=timedelta(days=7)),
    ]
    rules = keep_rules(tasks, {"web": LIFETIMES_KEPT, "db": LIFETIMES_KEPT, "backup": 1})
    assert rules == [
        KeepRule("backup", 5),  # a task's own rule wins over a name in the others
        KeepRule("report", None, timedelta(days=7)),
        KeepRule("db", 1000),
        KeepRule("web", 1000),
    ]


@pytest.mark.parametrize(
    ("line", "note"),
    [
        (f"{RUN_ID} web 1", NotedStart(RUN_ID, "web", 1)),
        (f"{RUN_ID} my.svc-2 12", NotedStart(RUN_ID, "my.svc-2", 12)),
        (RUN_ID, NotedStart(RUN_ID, None)),  # an older daemon noted the id only
        (f"{RUN_ID} web x", None),
        (f"{RUN_ID} web 1 extra", None),
        ("", None),
    ],
)
def test_a_services_log_line_notes_the_run_service_and_instance(
    line: str, note: NotedStart | None
) -> None:
    assert read_note(line) == note


def test_a_noted_start_reads_back() -> None:
    run = lifetime_run(RUN_ID, "web", 3, T0)
    assert read_note(start_note(run)) == NotedStart(RUN_ID, "web", 3)


def test_a_start_never_stored_is_recorded_crashed_at_the_time_its_id_carries() -> None:
    spawned_at = T0 - timedelta(hours=1)
    run_id = str(ULID.from_datetime(spawned_at))
    run = crashed_unrecorded(NotedStart(run_id, "web", 1), [4242], T0)
    assert run.created_at == run.start_at == spawned_at
    assert (run.status, run.end_reason, run.exit_code) == (RunStatus.ENDED, EndReason.CRASHED, -2)
    assert (run.task_name, run.replica_index, run.kind) == ("web", 1, RunKind.SERVICE)
    assert run.end_at == T0
    assert run.description.splitlines()[1:] == [
        "Crashed: the daemon stopped while the run was running.",
        "Its start was not stored before the daemon died. "
        "Processes it left running (process group 4242) were killed.",
    ]
