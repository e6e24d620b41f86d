"""Pure rules of notifications: which kinds an event is, where it goes, what is folded.

Nothing here reads a clock or sends anything: the notification service owns
timers and deliveries and asks these functions what to do.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class NotificationKind(StrEnum):
    """What a notification is about; `[[routes]] kinds` names these. Only append."""

    SUCCEEDED = "succeeded"  # a run ended with a success exit code
    FAILED = "failed"  # a run ended with another exit code, or could not start
    TIMEOUT = "timeout"  # a run was stopped at its task's timeout
    CRASHED = "crashed"  # a run died with the daemon (found running at start)
    STOPPED = "stopped"  # a run was stopped on request (or made room, on_overlap = kill)
    LOG_OVERFLOW = "log_overflow"  # a run was stopped for filling its log (log_on_full = kill)
    QUEUE_FULL = "queue_full"  # a trigger was refused: max_queued runs already waited
    MISSED = "missed"  # cron ticks passed while the daemon was down
    RECOVERED = "recovered"  # the first success of a task after a failure
    DISK_FULL = "disk_full"  # a trigger was refused because the data dir's disk is full
    QUOTA_EXHAUSTED = "quota_exhausted"  # a v3 account's runtime allowance ran out
    UNHEALTHY = "unhealthy"  # a service's instance failed its health checks and was restarted
    FATAL = "fatal"  # a service's instance was given up (too many failed starts in a row)


# End reasons (runs' `end_reason` values) that count as a failure for `recovered`.
FAILURE_END_REASONS = frozenset({"failed", "timeout", "crashed", "log_overflow", "start_failed"})

# A run's end reason -> the notification kind it is; reasons absent here
# (skipped, daemon_stopped) notify nobody: nothing went wrong with the task.
_KIND_OF_END = {
    "success": NotificationKind.SUCCEEDED,
    "failed": NotificationKind.FAILED,
    "start_failed": NotificationKind.FAILED,
    "timeout": NotificationKind.TIMEOUT,
    "crashed": NotificationKind.CRASHED,
    "stopped": NotificationKind.STOPPED,
    "log_overflow": NotificationKind.LOG_OVERFLOW,
    "queue_full": NotificationKind.QUEUE_FULL,
    "missed": NotificationKind.MISSED,
}


def kinds_of_end(end_reason: str, failing_before: bool) -> tuple[NotificationKind, ...]:
    """Return the kinds a run's end is: `failing_before` says the task's last end failed.

    A success after a failure is both `succeeded` and `recovered`, so a route
    for either hears it.
    """
    kind = _KIND_OF_END.get(end_reason)
    if kind is None:
        return ()
    if kind is NotificationKind.SUCCEEDED and failing_before:
        return (kind, NotificationKind.RECOVERED)
    return (kind,)


# A service lifetime's end reason -> its kind. Only what needs a person: an
# instance restarted for failing its health checks, and lifetimes found running
# after a daemon crash. A crash loop's failed exits are not sent one by one: the
# instance's `fatal` (a signal, not a run's end) says when runyard gives up.
_KIND_OF_SERVICE_END = {
    "unhealthy": NotificationKind.UNHEALTHY,
    "crashed": NotificationKind.CRASHED,
}


def kinds_of_service_end(end_reason: str) -> tuple[NotificationKind, ...]:
    """Return the kinds the end of a service's lifetime (a run of kind `service`) is."""
    kind = _KIND_OF_SERVICE_END.get(end_reason)
    return () if kind is None else (kind,)


def failing_after(end_reason: str, failing_before: bool) -> bool:
    """Return whether the task counts as failing after a run ended with `end_reason`.

    Only a success clears a failure: a stop, a skip or a refused trigger says
    nothing about whether the task works again.
    """
    if end_reason in FAILURE_END_REASONS:
        return True
    if end_reason == "success":
        return False
    return failing_before


@dataclass(frozen=True)
class Route:
    """One `[[routes]]` entry: events of these kinds, of tasks matching these globs."""

    kinds: frozenset[str]
    notifiers: tuple[str, ...]
    tasks: tuple[str, ...] = ("*",)  # shell-style globs on the task name


def matches(route: Route, task_name: str, kind: str) -> bool:
    """Return whether `route` takes an event of `kind` about `task_name`."""
    return kind in route.kinds and any(
        fnmatch.fnmatchcase(task_name, pattern) for pattern in route.tasks
    )


def notifiers_for(routes: Iterable[Route], task_name: str, kind: str) -> tuple[str, ...]:
    """Return the notifiers an event goes to: every matching route's, each once, in order."""
    chosen: dict[str, None] = {}
    for route in routes:
        if matches(route, task_name, kind):
            chosen.update(dict.fromkeys(route.notifiers))
    return tuple(chosen)


@dataclass(frozen=True)
class Window:
    """Repeats of one (task, kind) folded since its last message was sent."""

    opened_at: datetime  # when the message that opened the window was decided
    repeats: int = 0  # events folded since then
    last_run_id: str | None = None  # the latest folded event's run, for the summary


@dataclass(frozen=True)
class Observation:
    """What to do with one event, and the window to keep for its (task, kind)."""

    send: bool  # send a message now (else the event is folded into `window`)
    window: Window
    # Repeats of an earlier window not reported yet (its summary was not sent
    # before this event came): the message sent now reports them.
    folded_before: int = 0


def observe(
    window: Window | None, now: datetime, length: timedelta, run_id: str | None
) -> Observation:
    """Decide whether an event is sent now or folded into its (task, kind)'s open window.

    The first event of a (task, kind) is sent at once, so the first failure is
    heard without waiting; repeats within `length` of it are folded, and the
    window's summary (see `summary_due`) reports them with a count.
    """
    if length <= timedelta(0):
        return Observation(send=True, window=Window(opened_at=now))
    if window is None or now >= window.opened_at + length:
        folded = 0 if window is None else window.repeats
        return Observation(send=True, window=Window(opened_at=now), folded_before=folded)
    folded_into = replace(window, repeats=window.repeats + 1, last_run_id=run_id)
    return Observation(send=False, window=folded_into)


def summary_due(window: Window, now: datetime, length: timedelta) -> bool:
    """Return whether `window` has closed (a summary of its repeats is due, if any)."""
    return now >= window.opened_at + length


# Waits between delivery attempts: 1 s, 2 s, 4 s ... at most MAX_RETRY_DELAY.
FIRST_RETRY_DELAY = timedelta(seconds=1)
MAX_RETRY_DELAY = timedelta(minutes=1)


def retry_delay(attempt: int) -> timedelta:
    """Return the wait after failed attempt number `attempt` (1-based): doubling, capped."""
    doublings = min(max(attempt - 1, 0), 16)
    delay: timedelta = FIRST_RETRY_DELAY * (2**doublings)
    return min(delay, MAX_RETRY_DELAY)


def next_attempt_at(
    first_attempt_at: datetime, attempt: int, now: datetime, budget: timedelta
) -> datetime | None:
    """Return when to try again after failed attempt `attempt`, or None when the budget is spent.

    The budget counts from the first attempt; the last retry is shortened to
    end inside it rather than dropped, so a receiver back within the budget
    is always tried.
    """
    deadline = first_attempt_at + budget
    if now >= deadline:
        return None
    return min(now + retry_delay(attempt), deadline)


class DeliveryOutcome(StrEnum):
    """How one message's delivery to one notifier ended."""

    DELIVERED = "delivered"  # every URL of the notifier accepted it
    FAILED = "failed"  # a URL still refused it when the retry budget ran out
    DROPPED = "dropped"  # the pending queue was full and this was the oldest message


def message_status(outcomes: Sequence[str]) -> str:
    """Return a message's status from its deliveries' outcomes.

    `failed` wins over `dropped`, which wins over `delivered`; a message with
    no deliveries (routed to in-app notifiers only) is `delivered`.
    """
    for outcome in (DeliveryOutcome.FAILED, DeliveryOutcome.DROPPED):
        if outcome in outcomes:
            return outcome.value
    return DeliveryOutcome.DELIVERED.value


@dataclass(frozen=True)
class Delivery:
    """How one message went to one URL of one notifier."""

    notifier: str
    url: str  # as Apprise shows it with passwords and tokens hidden
    outcome: str  # a DeliveryOutcome value
    attempts: int = 0
    error: str = ""  # why the last attempt failed ("" when delivered)


@dataclass(frozen=True)
class Notification:
    """One message the routes produced: kept in-app, and sent to its notifiers."""

    id: str
    created_at: datetime
    kind: str  # a NotificationKind value
    task_name: str | None
    run_id: str | None  # the run it is about (the latest one, for a summary)
    count: int  # events it stands for: 1, plus the repeats it reports
    title: str
    body: str
    notifiers: tuple[str, ...]
    status: str  # "pending" until every delivery ended, then message_status(...)
    deliveries: tuple[Delivery, ...] = ()
    updated_at: datetime | None = None


PENDING = "pending"
