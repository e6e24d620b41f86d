from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runyard.domain.models import EndReason, OverlapPolicy, RetryBackoff, TaskDefinition
from runyard.domain.policies import (
    Admission,
    Load,
    admit,
    classify_exit,
    retention_cutoff,
    retry_delay,
    should_retry,
)

NOW = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)


def task(**overrides: object) -> TaskDefinition:
    return TaskDefinition(name="t", run="true", **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overlap", "max_concurrent", "max_queued", "load", "expected"),
    [
        # task idle, daemon has room: start
        ("queue", 1, 100, Load(0, 0, 0, 4), Admission.START),
        # task busy: the policy decides
        ("queue", 1, 100, Load(1, 0, 1, 4), Admission.QUEUE),
        ("skip", 1, 100, Load(1, 0, 1, 4), Admission.SKIP),
        ("kill", 1, 100, Load(1, 0, 1, 4), Admission.KILL_OLDEST),
        # queue full
        ("queue", 1, 2, Load(1, 2, 1, 4), Admission.QUEUE_FULL),
        ("queue", 1, 0, Load(1, 0, 1, 4), Admission.QUEUE_FULL),
        # room for more of this task
        ("queue", 3, 100, Load(2, 0, 2, 4), Admission.START),
        # only the daemon-wide limit is full: every policy waits
        ("queue", 1, 100, Load(0, 0, 4, 4), Admission.QUEUE),
        ("skip", 1, 100, Load(0, 0, 4, 4), Admission.QUEUE),
        ("kill", 1, 100, Load(0, 0, 4, 4), Admission.QUEUE),
        ("skip", 1, 0, Load(0, 0, 4, 4), Admission.QUEUE_FULL),
        # FIFO: a free slot does not let a newcomer jump the queue
        ("queue", 2, 100, Load(1, 1, 1, 4), Admission.QUEUE),
        # the v3 account's limit is full: queue, whatever the overlap policy
        ("queue", 4, 100, Load(0, 0, 2, 4, account_running=2, account_limit=2), Admission.QUEUE),
        ("skip", 4, 100, Load(0, 0, 2, 4, account_running=2, account_limit=2), Admission.QUEUE),
        ("kill", 4, 100, Load(0, 0, 2, 4, account_running=2, account_limit=2), Admission.QUEUE),
        ("queue", 4, 1, Load(0, 1, 2, 4, account_running=2, account_limit=2), Admission.QUEUE_FULL),
        # the account has room: start
        ("queue", 4, 100, Load(1, 0, 2, 4, account_running=1, account_limit=2), Admission.START),
        # another account's runs wait in the task's queue, none in this account's lane: start
        (
            "queue",
            4,
            100,
            Load(1, 3, 1, 4, account_running=0, account_limit=1, lane_queued=0),
            Admission.START,
        ),
        # this account's lane has runs waiting: queue behind them
        (
            "queue",
            4,
            100,
            Load(1, 3, 1, 4, account_running=0, account_limit=1, lane_queued=1),
            Admission.QUEUE,
        ),
    ],
)
def test_admit(
    overlap: str, max_concurrent: int, max_queued: int, load: Load, expected: Admission
) -> None:
    definition = task(
        on_overlap=OverlapPolicy(overlap), max_concurrent=max_concurrent, max_queued=max_queued
    )
    assert admit(definition, load) is expected


@pytest.mark.parametrize(
    ("reason", "attempt", "allowed", "expected"),
    [
        (EndReason.FAILED, 0, 2, True),
        (EndReason.TIMEOUT, 1, 2, True),
        (EndReason.CRASHED, 0, 1, True),
        (EndReason.LOG_OVERFLOW, 0, 1, True),
        (EndReason.START_FAILED, 0, 1, True),
        (EndReason.FAILED, 2, 2, False),
        (EndReason.FAILED, 0, 0, False),
        (EndReason.SUCCESS, 0, 3, False),
        (EndReason.STOPPED, 0, 3, False),
        (EndReason.SKIPPED, 0, 3, False),
        (EndReason.QUEUE_FULL, 0, 3, False),
        (EndReason.DAEMON_STOPPED, 0, 3, False),
    ],
)
def test_should_retry(reason: EndReason, attempt: int, allowed: int, expected: bool) -> None:
    assert should_retry(task(retry_attempts=allowed), reason, attempt) is expected


@pytest.mark.parametrize(
    ("backoff", "attempt", "expected_seconds"),
    [
        ("constant", 1, 10),
        ("constant", 5, 10),
        ("linear", 1, 10),
        ("linear", 3, 30),
        ("exponential", 1, 10),
        ("exponential", 2, 20),
        ("exponential", 4, 80),
        ("exponential", 6, 300),  # 320 s capped at 5 minutes
        ("exponential", 100, 300),
        ("linear", 100, 300),
    ],
)
def test_retry_delay(backoff: str, attempt: int, expected_seconds: int) -> None:
    definition = task(retry_delay=timedelta(seconds=10), retry_backoff=RetryBackoff(backoff))
    assert retry_delay(definition, attempt) == timedelta(seconds=expected_seconds)


@pytest.mark.parametrize(
    ("code", "flags", "expected"),
    [
        (0, {}, EndReason.SUCCESS),
        (3, {}, EndReason.FAILED),
        (2, {}, EndReason.SUCCESS),  # listed in success_exit_codes below
        (143, {"stop_requested": True}, EndReason.STOPPED),
        (0, {"stop_requested": True}, EndReason.STOPPED),
        (137, {"timed_out": True}, EndReason.TIMEOUT),
        (137, {"timed_out": True, "stop_requested": True}, EndReason.TIMEOUT),
        (143, {"log_overflowed": True}, EndReason.LOG_OVERFLOW),
        (143, {"daemon_stopping": True}, EndReason.DAEMON_STOPPED),
        (0, {"daemon_stopping": True}, EndReason.SUCCESS),
    ],
)
def test_classify_exit(code: int, flags: dict[str, bool], expected: EndReason) -> None:
    options = {
        "stop_requested": False,
        "timed_out": False,
        "log_overflowed": False,
        "daemon_stopping": False,
    }
    options.update(flags)
    assert classify_exit(task(success_exit_codes=(0, 2)), code, **options) is expected


def test_retention_cutoff() -> None:
    assert retention_cutoff(NOW, None) is None
    assert retention_cutoff(NOW, timedelta(days=7)) == NOW - timedelta(days=7)
