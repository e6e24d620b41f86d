from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runyard.domain.describe import describe_end, describe_queued, describe_start, describe_wait
from runyard.domain.models import EndReason, Run, RunStatus, TaskDefinition, TriggeredBy
from runyard.domain.policies import Load

T0 = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("triggered_by", "retry", "expected"),
    [
        (TriggeredBy.API, 0, "runyard 9.9: triggered through the API."),
        (TriggeredBy.CLOUD, 0, "runyard 9.9: remotely triggered."),
        (TriggeredBy.CRON, 2, "runyard 9.9: scheduled, retry 2 of run R1."),
    ],
)
def test_describe_start(triggered_by: TriggeredBy, retry: int, expected: str) -> None:
    run = Run(
        "R2", "t", RunStatus.PENDING, T0, triggered_by, retry_attempt=retry, retry_of_run_id="R1"
    )
    assert describe_start(run, "9.9") == expected


@pytest.mark.parametrize(
    ("waited", "expected"),
    [
        (timedelta(milliseconds=300), None),
        (
            timedelta(seconds=90),
            "Waited 1m30s in the queue; started as soon as a slot was free.",
        ),
    ],
)
def test_describe_wait(waited: timedelta, expected: str | None) -> None:
    assert describe_wait(T0, T0 + waited) == expected


@pytest.mark.parametrize(
    ("delay", "waited", "expected"),
    [
        pytest.param(
            timedelta(seconds=2),
            timedelta(seconds=2, milliseconds=10),
            "Waited out the retry delay of 2s (retry_delay), then started.",
            id="delay-only",
        ),
        pytest.param(
            timedelta(milliseconds=500),
            timedelta(milliseconds=520),
            "Waited out the retry delay of 500ms (retry_delay), then started.",
            id="short-delay",
        ),
        pytest.param(
            timedelta(seconds=4),
            timedelta(seconds=9, milliseconds=300),
            "Waited out the retry delay of 4s (retry_delay), then 5s in the queue for a slot.",
            id="delay-then-queue",
        ),
    ],
)
def test_describe_wait_of_a_retry(delay: timedelta, waited: timedelta, expected: str) -> None:
    # A retry waits out its delay before it may start: that is not time in the queue.
    assert describe_wait(T0, T0 + waited, not_before=T0 + delay) == expected


@pytest.mark.parametrize(
    ("reason", "code", "duration", "expected"),
    [
        (EndReason.SUCCESS, 0, timedelta(milliseconds=19), "Succeeded after 19ms (exit code 0)."),
        (EndReason.FAILED, 3, timedelta(seconds=4.25), "Failed after 4.2s with exit code 3."),
        (EndReason.TIMEOUT, 137, timedelta(minutes=90), "Timed out after 1h30m and was stopped"),
        (EndReason.QUEUE_FULL, -1, None, "Refused: the task's queue was full"),
    ],
)
def test_describe_end(
    reason: EndReason, code: int, duration: timedelta | None, expected: str
) -> None:
    assert describe_end(reason, code, duration=duration).startswith(expected)


def test_failures_quote_stderr_but_successes_do_not() -> None:
    failed = describe_end(EndReason.FAILED, 1, stderr_tail=["boom"], detail="extra")
    assert failed.splitlines() == [
        "Failed with exit code 1.",
        "extra",
        "Last lines of stderr:",
        "  boom",
    ]
    assert "boom" not in describe_end(EndReason.SUCCESS, 0, stderr_tail=["boom"])


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        (
            Load(0, 0, 1, 4, account_running=1, account_limit=1),
            "Queued: the account's limit of 1 run at once was reached; "
            "it starts the moment a slot frees.",
        ),
        (Load(2, 0, 2, 4), "Queued: the task's limit of 2 runs at once (max_concurrent)"),
        (Load(0, 0, 4, 4), "Queued: the daemon's limit of 4 runs at once was reached"),
        (Load(0, 3, 1, 4), "Queued: earlier runs of the task were already waiting"),
    ],
)
def test_describe_queued_names_the_limit_that_was_full(load: Load, expected: str) -> None:
    task = TaskDefinition(name="t", run="true", max_concurrent=2)
    assert describe_queued(task, load).startswith(expected)
