"""The daemon log's line per run start and per run end (logger `runyard.runs`)."""

from __future__ import annotations

import logging

from runyard.domain.models import Run

log = logging.getLogger("runyard.runs")


def run_started(run: Run) -> None:
    """Log that `run` is starting its process."""
    if not log.isEnabledFor(logging.INFO):
        return
    trigger = run.triggered_by.value
    attempt = f", retry {run.retry_attempt}" if run.retry_attempt else ""
    log.info(
        "run %s of %s started (trigger %s%s)",
        run.id,
        run.task_name,
        trigger,
        attempt,
        extra={
            "run_id": run.id,
            "task": run.task_name,
            "trigger": trigger,
            "retry_attempt": run.retry_attempt,
        },
    )


def run_ended(run: Run) -> None:
    """Log how `run` ended, with its exit code and how long it ran."""
    if not log.isEnabledFor(logging.INFO):
        return
    outcome = run.end_reason.value if run.end_reason is not None else "unknown"
    duration_ms = None
    ran = ""
    if run.start_at is not None and run.end_at is not None:
        duration_ms = round((run.end_at - run.start_at).total_seconds() * 1000, 1)
        ran = f" after {_duration(duration_ms)}"
    log.info(
        "run %s of %s ended: %s, exit code %s%s (trigger %s)",
        run.id,
        run.task_name,
        outcome,
        run.exit_code,
        ran,
        run.triggered_by.value,
        extra={
            "run_id": run.id,
            "task": run.task_name,
            "trigger": run.triggered_by.value,
            "outcome": outcome,
            "exit_code": run.exit_code,
            "duration_ms": duration_ms,
        },
    )


def _duration(milliseconds: float) -> str:
    if milliseconds < 1000:
        return f"{milliseconds:g} ms"
    return f"{milliseconds / 1000:.2f} s"
