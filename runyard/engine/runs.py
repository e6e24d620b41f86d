"""The runs the engine makes from runs: ended (one way for every end), retried, announced."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ulid import ULID

from runyard import __version__
from runyard.domain.describe import describe_end, describe_start
from runyard.domain.models import EXIT_NOT_RUN, EndReason, Run, RunStatus, TaskDefinition
from runyard.domain.policies import retry_delay, should_retry


def ended(
    run: Run,
    reason: EndReason,
    exit_code: int,
    end_at: datetime,
    *,
    detail: str = "",
    duration: timedelta | None = None,
    stderr_tail: Sequence[str] = (),
    notes: Sequence[str] = (),
    **changes: Any,
) -> Run:
    """Return `run` ended: its reason, exit code and end time, the closing lines added.

    `changes` sets other fields in the same step (start_at, output_data).
    """
    closing = describe_end(
        reason,
        exit_code,
        duration=duration,
        detail=detail,
        stderr_tail=[storable_text(line) for line in stderr_tail],
    )
    return dataclasses.replace(
        run,
        status=RunStatus.ENDED,
        end_reason=reason,
        exit_code=exit_code,
        end_at=end_at,
        description="\n".join(filter(None, [run.description, closing, *notes])),
        **changes,
    )


def ended_unrun(run: Run, reason: EndReason, detail: str, now: datetime) -> Run:
    """Return `run` ended without ever having a process."""
    return ended(run, reason, EXIT_NOT_RUN, now, detail=detail)


def retry_of(ended: Run, task: TaskDefinition, now: datetime) -> Run | None:
    """Return the pending retry of an ended run, or None if its task does not retry it."""
    if ended.end_reason is None or not should_retry(task, ended.end_reason, ended.retry_attempt):
        return None
    attempt = ended.retry_attempt + 1
    retry = Run(
        id=str(ULID()),
        task_name=ended.task_name,
        status=RunStatus.PENDING,
        created_at=now,
        triggered_by=ended.triggered_by,
        replica_index=ended.replica_index,
        retry_attempt=attempt,
        retry_of_run_id=ended.id,
        params=ended.params,
        input_data=ended.input_data,
        input_size=ended.input_size,
        account=ended.account,
        secret_hash=ended.secret_hash,
        not_before=now + retry_delay(task, attempt),
    )
    return dataclasses.replace(retry, description=describe_start(retry, __version__))


def effective(task: TaskDefinition) -> TaskDefinition:
    """The task as admission sees it: one trigger's replicas always run side by side."""
    if task.replicas > task.max_concurrent:
        return dataclasses.replace(task, max_concurrent=task.replicas)
    return task


def storable_text(text: str) -> str:
    """Return `text` without what a database refuses: NUL (PostgreSQL), lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def event_data(run: Run) -> dict[str, Any]:
    """What a run event says of the run."""
    return {
        "id": run.id,
        "task_name": run.task_name,
        "status": run.status.value,
        "end_reason": run.end_reason.value if run.end_reason else None,
        "exit_code": run.exit_code,
    }
