"""A notification on its way: the message the rules decided, and the facts it is told with.

A `PendingMessage` lives from the moment the rules decide to send it until
each of its deliveries has ended or it is dropped. Its facts (the run's
outcome, exit code, duration and log tail) are read from the store and the
run's log when it is delivered: blocking reads, made on the notification
service's own thread pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from runyard.domain.models import RunKind
from runyard.domain.notifications import Delivery, Notification
from runyard.exceptions import StoreError
from runyard.notifications.message import LOG_TAIL_LINES, MessageFacts
from runyard.store import RunStore
from runyard.store.logs import count_lines, read_lines

log = logging.getLogger("runyard.notifications")


@dataclasses.dataclass
class PendingMessage:
    """A message decided by the rules, waiting to be stored and delivered."""

    id: str
    created_at: datetime
    kind: str
    task_name: str | None
    run_id: str | None
    count: int
    repeats: int
    first_at: datetime | None
    notifiers: tuple[str, ...]
    detail: str = ""
    account: str | None = None
    # Filled in as the work goes on; read when the message is dropped.
    record: Notification | None = None
    results: dict[int, Delivery] = dataclasses.field(default_factory=dict)
    targets: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    task: asyncio.Task[None] | None = None
    dropped: bool = False

    def new_record(self, title: str, body: str, status: str) -> Notification:
        """Return the in-app notification of this message, with no delivery yet."""
        return Notification(
            id=self.id,
            created_at=self.created_at,
            kind=self.kind,
            task_name=self.task_name,
            run_id=self.run_id,
            count=self.count,
            title=title,
            body=body,
            notifiers=self.notifiers,
            status=status,
        )


def bare_facts(message: PendingMessage, run_url: str | None) -> MessageFacts:
    """Return what the message itself knows, without reading the run."""
    return MessageFacts(
        kind=message.kind,
        task=message.task_name,
        count=message.count,
        repeats=message.repeats,
        first_at=message.first_at,
        run_id=message.run_id,
        run_url=run_url,
        detail=message.detail,
        account=message.account,
    )


def read_facts(
    message: PendingMessage,
    run_url: str | None,
    store: RunStore,
    log_path: Callable[[str], Path],
) -> MessageFacts:
    """Return the message's facts with its run's outcome and log tail (blocking)."""
    facts = bare_facts(message, run_url)
    if message.run_id is None:
        return facts
    try:
        run = store.get_run(message.run_id)
    except StoreError as error:
        # The message still goes out, with what the event itself said.
        log.warning("notification %s: could not read run %s: %s", message.id, message.run_id, error)
        return facts
    if run is None:  # trimmed by retention meanwhile
        return facts
    started = run.start_at is not None
    if run.kind is RunKind.SERVICE:
        # Which instance, and what the supervisor saw: the description after its first line.
        _, _, what = run.description.partition("\n")
        facts = dataclasses.replace(
            facts, instance=run.replica_index, detail=facts.detail or what.strip()
        )
    return dataclasses.replace(
        facts,
        outcome=run.end_reason.value if run.end_reason else None,
        exit_code=run.exit_code if started else None,
        duration=(run.end_at - run.start_at) if run.start_at and run.end_at else None,
        log_lines=_log_tail(log_path(run.id)) if started else [],
    )


def _log_tail(path: Path) -> list[str]:
    try:
        end = count_lines(path)
        lines = read_lines(path, max(end - LOG_TAIL_LINES, 0), LOG_TAIL_LINES)
    except OSError:
        return []
    return [line.text for line in lines]
