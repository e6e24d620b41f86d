"""The multi-line description a run carries: how it started, waited and ended."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from runyard.domain.durations import format_duration
from runyard.domain.models import EndReason, Run, TaskDefinition, TriggeredBy
from runyard.domain.policies import Load

_HOW_STARTED = {
    TriggeredBy.API: "triggered through the API",
    TriggeredBy.CLOUD: "remotely triggered",
    TriggeredBy.CRON: "scheduled",
    TriggeredBy.SERVICE: "started to keep its service up",
}


def describe_start(run: Run, version: str) -> str:
    """Return the first line: which runyard started the run, and how."""
    return describe_trigger(
        run.triggered_by,
        run.replica_index,
        version,
        retry_attempt=run.retry_attempt,
        retry_of=run.retry_of_run_id,
    )


def describe_trigger(
    triggered_by: TriggeredBy,
    replica_index: int,
    version: str,
    *,
    retry_attempt: int = 0,
    retry_of: str | None = None,
) -> str:
    """Return the first line of a run about to be created, from what starts it."""
    line = f"runyard {version}: {_HOW_STARTED[triggered_by]}"
    if retry_attempt:
        line += f", retry {retry_attempt} of run {retry_of}"
    if replica_index:
        line += f", replica {replica_index}"
    return line + "."


def describe_service_start(version: str, service: str, index: int) -> str:
    """Return the first line of a service's lifetime: which instance of which service."""
    return f"runyard {version}: started instance {index} of service {service}."


def describe_queued(task: TaskDefinition, load: Load) -> str:
    """Return the line saying why a trigger waits in the queue instead of starting."""
    if load.account_limit is not None and load.account_running >= load.account_limit:
        why = f"the account's limit of {_runs(load.account_limit)} at once was reached"
    elif load.task_running >= task.max_concurrent:
        why = (
            f"the task's limit of {_runs(task.max_concurrent)} at once (max_concurrent) was reached"
        )
    elif load.global_running >= load.global_limit:
        why = f"the daemon's limit of {_runs(load.global_limit)} at once was reached"
    else:
        why = "earlier runs of the task were already waiting"
    return f"Queued: {why}; it starts the moment a slot frees."


def describe_wait(
    created_at: datetime, start_at: datetime, not_before: datetime | None = None
) -> str | None:
    """Return a line about the time before the run started, or None when it started at once.

    `not_before` is when a retry's `retry_delay` ran out: the wait up to it is
    that delay, and only the time after it was spent queued for a slot.
    """
    if not_before is None or not_before <= created_at:
        return _queued_for(start_at - created_at)
    # Exact: the delay is what retry_delay and the backoff made it, e.g. 4s or 500ms.
    line = f"Waited out the retry delay of {format_duration(not_before - created_at)} (retry_delay)"
    queued = start_at - max(not_before, created_at)
    if queued >= timedelta(seconds=1):
        return f"{line}, then {format_duration(_whole_seconds(queued))} in the queue for a slot."
    return f"{line}, then started."


def _queued_for(waited: timedelta) -> str | None:
    if waited < timedelta(seconds=1):
        return None
    return (
        f"Waited {format_duration(_whole_seconds(waited))} in the queue; "
        "started as soon as a slot was free."
    )


def _runs(count: int) -> str:
    return "1 run" if count == 1 else f"{count} runs"


def describe_end(
    end_reason: EndReason,
    exit_code: int,
    *,
    duration: timedelta | None = None,
    detail: str = "",
    stderr_tail: Sequence[str] = (),
) -> str:
    """Return the closing lines: how the run ended, with failure details."""
    took = f" after {_took(duration)}" if duration is not None else ""
    sentences = {
        EndReason.SUCCESS: f"Succeeded{took} (exit code {exit_code}).",
        EndReason.FAILED: f"Failed{took} with exit code {exit_code}.",
        EndReason.STOPPED: f"Stopped{took} on request (exit code {exit_code}).",
        EndReason.TIMEOUT: f"Timed out{took} and was stopped (exit code {exit_code}).",
        EndReason.CRASHED: "Crashed: the daemon stopped while the run was running.",
        EndReason.SKIPPED: "Skipped.",
        EndReason.LOG_OVERFLOW: f"Stopped{took}: its log reached log_max_size.",
        EndReason.QUEUE_FULL: "Refused: the task's queue was full (max_queued).",
        EndReason.MISSED: "Missed: the daemon was not running at the scheduled time.",
        EndReason.DAEMON_STOPPED: f"Stopped{took} because the daemon shut down.",
        EndReason.START_FAILED: "Could not be started.",
        EndReason.UNHEALTHY: f"Stopped{took}: its health check failed (exit code {exit_code}).",
    }
    lines = [sentences[end_reason]]
    if detail:
        lines.append(detail)
    if stderr_tail and end_reason is not EndReason.SUCCESS:
        lines.append("Last lines of stderr:")
        lines.extend(f"  {line}" for line in stderr_tail)
    return "\n".join(lines)


def _whole_seconds(value: timedelta) -> timedelta:
    return timedelta(seconds=int(value.total_seconds()))


def _took(value: timedelta) -> str:
    """Return a run's duration as a person reads it: 19ms, 4.2s, 1h30m."""
    if value < timedelta(seconds=1):
        return f"{int(value / timedelta(milliseconds=1))}ms"
    if value < timedelta(minutes=1):
        return f"{value.total_seconds():.1f}s"
    return format_duration(_whole_seconds(value))
