"""Pure decisions the engine asks for: admission, retries, end reasons, retention.

Nothing here reads a clock or touches a process: time comes in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from runyard.domain.models import (
    FAILURE_LIKE,
    EndReason,
    OverlapPolicy,
    RetryBackoff,
    TaskDefinition,
)

MAX_RETRY_DELAY = timedelta(minutes=5)


class Admission(StrEnum):
    START = "start"  # a slot is free: start now
    QUEUE = "queue"  # wait FIFO for a slot
    SKIP = "skip"  # on_overlap = skip and the task is busy: end as skipped
    KILL_OLDEST = "kill_oldest"  # on_overlap = kill: stop the oldest run, then start
    QUEUE_FULL = "queue_full"  # max_queued runs already wait: end as queue_full


@dataclass(frozen=True)
class Load:
    """What is running and waiting when a trigger arrives."""

    task_running: int  # runs of this task with a process (or about to get one)
    task_queued: int  # runs of this task waiting for a slot
    global_running: int  # runs of all tasks with a process
    global_limit: int  # [daemon] max_concurrent_runs
    account_running: int = 0  # runs of the triggering v3 account with a process
    account_limit: int | None = None  # its max_concurrent_runs; None: no account limit
    lane_queued: int | None = None  # runs waiting ahead in this task's queue for this account


def admit(task: TaskDefinition, load: Load) -> Admission:
    """Decide what one new trigger of `task` does under `load`.

    The overlap policy is about the task's own runs; when only the daemon-wide
    limit is full, every policy waits in the queue, because skipping or killing
    would punish a task for what other tasks do. A full account limit queues
    too: the v3 API never refuses a trigger for concurrency.

    Each account waits in its own lane of a task's queue, so one saturated
    account does not hold back another's runs of the same task.
    """
    task_busy = load.task_running >= task.max_concurrent
    if task_busy and task.on_overlap is OverlapPolicy.SKIP:
        return Admission.SKIP
    if task_busy and task.on_overlap is OverlapPolicy.KILL:
        return Admission.KILL_OLDEST
    account_busy = load.account_limit is not None and load.account_running >= load.account_limit
    ahead = load.task_queued if load.lane_queued is None else load.lane_queued
    if (
        not task_busy
        and not account_busy
        and ahead == 0
        and load.global_running < load.global_limit
    ):
        return Admission.START
    if load.task_queued >= task.max_queued:
        return Admission.QUEUE_FULL
    return Admission.QUEUE


def should_retry(task: TaskDefinition, end_reason: EndReason, retry_attempt: int) -> bool:
    """Return whether a run that ended with `end_reason` gets another attempt."""
    return end_reason in FAILURE_LIKE and retry_attempt < task.retry_attempts


def retry_delay(task: TaskDefinition, attempt: int) -> timedelta:
    """Return how long attempt number `attempt` (1-based) waits before it starts."""
    base = task.retry_delay
    if task.retry_backoff is RetryBackoff.LINEAR:
        delay = base * attempt
    elif task.retry_backoff is RetryBackoff.EXPONENTIAL:
        # Cap the exponent first: 2**100 seconds overflows timedelta.
        delay = base * (2 ** min(attempt - 1, 32))
    else:
        delay = base
    return min(delay, MAX_RETRY_DELAY)


def classify_exit(
    task: TaskDefinition,
    exit_code: int,
    *,
    stop_requested: bool,
    timed_out: bool,
    log_overflowed: bool,
    daemon_stopping: bool,
) -> EndReason:
    """Return the end reason of a process that exited with `exit_code`.

    A deliberate stop wins over the exit code: a script killed by SIGTERM exits
    143, which would otherwise read as a plain failure.
    """
    if log_overflowed:
        return EndReason.LOG_OVERFLOW
    if timed_out:
        return EndReason.TIMEOUT
    if stop_requested:
        return EndReason.STOPPED
    if daemon_stopping and exit_code not in task.success_exit_codes:
        return EndReason.DAEMON_STOPPED
    if exit_code in task.success_exit_codes:
        return EndReason.SUCCESS
    return EndReason.FAILED


def retention_cutoff(now: datetime, keep_for: timedelta | None) -> datetime | None:
    """Return the end time before which ended runs are deleted, or None to keep all."""
    return None if keep_for is None else now - keep_for
