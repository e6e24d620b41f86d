"""The runs the engine makes from runs: ended (one way for every end), retried, announced."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from ulid import ULID

from runyard import __version__
from runyard.domain.describe import describe_end, describe_start, describe_wait
from runyard.domain.models import (
    EXIT_NOT_RUN,
    EndReason,
    Run,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.domain.policies import retry_delay, should_retry
from runyard.engine.writer import StoreWriter
from runyard.exceptions import StoreError, StoreUnavailable

log = logging.getLogger("runyard.engine")


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


def running_form(run: Run, now: datetime) -> Run:
    """Return `run` as it is stored when it starts at `now`: running, with its wait described."""
    waited = describe_wait(run.created_at, now, run.not_before)
    description = "\n".join(filter(None, [run.description, waited]))
    return dataclasses.replace(run, status=RunStatus.RUNNING, start_at=now, description=description)


def ended_unrun(run: Run, reason: EndReason, detail: str, now: datetime) -> Run:
    """Return `run` ended without ever having a process."""
    return ended(run, reason, EXIT_NOT_RUN, now, detail=detail)


def missed_run(
    task_name: str,
    count: int,
    first: datetime,
    last: datetime,
    clock: Callable[[], datetime],
    node: str | None = None,
) -> Run:
    """Return the one `missed` run recorded for `count` cron ticks that did not fire."""
    ticks = "1 scheduled tick was" if count == 1 else f"{count} scheduled ticks were"
    when = (
        f"at {first.isoformat()}"
        if count == 1
        else f"between {first.isoformat()} and {last.isoformat()}"
    )
    run = Run(
        id=str(ULID()),
        task_name=task_name,
        status=RunStatus.PENDING,
        created_at=clock(),
        triggered_by=TriggeredBy.CRON,
        node=node,
    )
    run = dataclasses.replace(run, description=describe_start(run, __version__))
    return ended_unrun(
        run, EndReason.MISSED, f"{ticks} missed {when} while the daemon was not running.", clock()
    )


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
        node=ended.node,
        not_before=now + retry_delay(task, attempt),
    )
    return dataclasses.replace(retry, description=describe_start(retry, __version__))


async def store_end(writer: StoreWriter, ended: Run, retry: Run | None) -> tuple[Run, Run | None]:
    """Store a run's end (and its retry); return what was stored.

    The writer tries transient failures again until they land. An end the
    database refuses for good (a value it cannot hold) is stored without
    its output data and with its text cleaned, and failing that, bare: a
    run never stays `running` because of what it printed.
    """
    try:
        await writer.write(updates=[ended], inserts=[retry] if retry else [])
        return ended, retry
    except StoreUnavailable:
        raise  # the writer gave up at shutdown: the next daemon ends the run crashed
    except StoreError as error:
        log.error("run %s: its end cannot be stored as it is: %s", ended.id, error)
        note = (
            f"runyard could not store this run's end as it was ({error}); "
            "its output data was dropped."
        )
        ended = dataclasses.replace(
            ended,
            output_data=None,
            description=storable_text(f"{ended.description}\n{note}"),
        )
    try:
        await writer.write(updates=[ended], inserts=[retry] if retry else [])
        return ended, retry
    except StoreUnavailable:
        raise
    except StoreError as error:
        log.error("run %s: its cleaned end cannot be stored either: %s", ended.id, error)
    bare = dataclasses.replace(
        ended, description="runyard could not store how this run ended; see the daemon log."
    )
    await writer.write(updates=[bare])
    return bare, None


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
        "triggered_by": run.triggered_by.value,
    }
