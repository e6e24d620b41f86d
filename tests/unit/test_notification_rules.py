"""The pure rules of notifications: kinds of a run's end, routing, folding, retry timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runyard.domain.notifications import (
    NotificationKind,
    Route,
    Window,
    failing_after,
    kinds_of_end,
    kinds_of_service_end,
    message_status,
    next_attempt_at,
    notifiers_for,
    observe,
    retry_delay,
    summary_due,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
K = NotificationKind


@pytest.mark.parametrize(
    ("end_reason", "failing_before", "kinds"),
    [
        ("success", False, (K.SUCCEEDED,)),
        ("success", True, (K.SUCCEEDED, K.RECOVERED)),
        ("failed", False, (K.FAILED,)),
        ("failed", True, (K.FAILED,)),
        ("start_failed", False, (K.FAILED,)),
        ("timeout", False, (K.TIMEOUT,)),
        ("crashed", True, (K.CRASHED,)),
        ("stopped", False, (K.STOPPED,)),
        ("log_overflow", False, (K.LOG_OVERFLOW,)),
        ("queue_full", False, (K.QUEUE_FULL,)),
        ("missed", False, (K.MISSED,)),
        ("skipped", True, ()),
        ("daemon_stopped", True, ()),
        ("", False, ()),
    ],
)
def test_kinds_of_a_run_end(
    end_reason: str, failing_before: bool, kinds: tuple[NotificationKind, ...]
) -> None:
    assert kinds_of_end(end_reason, failing_before) == kinds


@pytest.mark.parametrize(
    ("end_reason", "kinds"),
    [
        # What needs a person: health checks failing, a lifetime cut by a daemon crash.
        ("unhealthy", (K.UNHEALTHY,)),
        ("crashed", (K.CRASHED,)),
        # A restart loop is heard once, as `fatal` (a signal), not one message per exit.
        ("failed", ()),
        ("start_failed", ()),
        ("success", ()),
        ("stopped", ()),
        ("daemon_stopped", ()),
        ("log_overflow", ()),
        ("", ()),
    ],
)
def test_kinds_of_a_service_lifetime_end(end_reason: str, kinds: tuple[K, ...]) -> None:
    assert kinds_of_service_end(end_reason) == kinds


@pytest.mark.parametrize(
    ("end_reason", "failing_before", "failing"),
    [
        ("failed", False, True),
        ("timeout", False, True),
        ("crashed", False, True),
        ("log_overflow", False, True),
        ("start_failed", False, True),
        ("success", True, False),
        ("success", False, False),
        # Only a success clears a failure.
        ("stopped", True, True),
        ("skipped", True, True),
        ("queue_full", True, True),
        ("missed", False, False),
    ],
)
def test_failing_after(end_reason: str, failing_before: bool, failing: bool) -> None:
    assert failing_after(end_reason, failing_before) is failing


OPS = Route(kinds=frozenset({"failed", "timeout"}), notifiers=("ops",), tasks=("backup*",))
ALL = Route(kinds=frozenset({"failed", "recovered"}), notifiers=("chat", "ops"))
QUIET = Route(kinds=frozenset({"succeeded"}), notifiers=("log",), tasks=("nightly", "weekly"))


@pytest.mark.parametrize(
    ("routes", "task", "kind", "notifiers"),
    [
        ([OPS], "backup-db", "failed", ("ops",)),
        ([OPS], "backup-db", "succeeded", ()),
        ([OPS], "report", "failed", ()),
        ([OPS], "Backup-db", "failed", ()),  # globs are case-sensitive, as task names are
        ([OPS, ALL], "backup-db", "failed", ("ops", "chat")),  # each notifier once, in order
        ([ALL, OPS], "backup-db", "failed", ("chat", "ops")),
        ([OPS, ALL], "report", "recovered", ("chat", "ops")),
        ([QUIET], "weekly", "succeeded", ("log",)),
        ([QUIET], "weekly2", "succeeded", ()),
        ([], "anything", "failed", ()),
    ],
)
def test_notifiers_for(
    routes: list[Route], task: str, kind: str, notifiers: tuple[str, ...]
) -> None:
    assert notifiers_for(routes, task, kind) == notifiers


@pytest.mark.parametrize(
    ("window", "now", "send", "repeats", "folded_before"),
    [
        (None, T0, True, 0, 0),  # the first event is sent at once
        (Window(T0), T0 + timedelta(minutes=1), False, 1, 0),
        (Window(T0, 5, "r5"), T0 + timedelta(minutes=59), False, 6, 0),
        (Window(T0, 5, "r5"), T0 + HOUR, True, 0, 5),  # the window closed: sent, reporting 5
        (Window(T0), T0 + 2 * HOUR, True, 0, 0),
    ],
)
def test_observe(
    window: Window | None, now: datetime, send: bool, repeats: int, folded_before: int
) -> None:
    seen = observe(window, now, HOUR, "r-new")
    assert (seen.send, seen.window.repeats, seen.folded_before) == (send, repeats, folded_before)
    if send:
        assert seen.window.opened_at == now
    else:
        assert seen.window.last_run_id == "r-new"


def test_a_zero_window_sends_every_event() -> None:
    window = observe(None, T0, timedelta(0), "a").window
    assert observe(window, T0, timedelta(0), "b").send


def test_a_flood_of_a_thousand_is_one_message_and_a_count() -> None:
    window, sent = None, 0
    for index in range(1000):
        seen = observe(window, T0 + timedelta(seconds=index), HOUR, f"r{index}")
        window, sent = seen.window, sent + seen.send
    assert sent == 1
    assert window is not None
    assert (window.repeats, window.last_run_id) == (999, "r999")
    assert not summary_due(window, T0 + HOUR - timedelta(microseconds=1), HOUR)
    assert summary_due(window, T0 + HOUR, HOUR)


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(1, 1), (2, 2), (3, 4), (4, 8), (6, 32), (7, 60), (50, 60)],
)
def test_retry_delay_doubles_up_to_a_minute(attempt: int, delay: int) -> None:
    assert retry_delay(attempt) == timedelta(seconds=delay)


@pytest.mark.parametrize(
    ("attempt", "elapsed", "budget", "wait"),
    [
        (1, 0, 300, 1),
        (3, 10, 300, 4),
        (8, 200, 300, 60),
        (8, 280, 300, 20),  # shortened to end inside the budget
        (9, 300, 300, None),  # spent
        (1, 0, 0, None),  # no budget: one attempt
    ],
)
def test_next_attempt_at(attempt: int, elapsed: int, budget: int, wait: int | None) -> None:
    now = T0 + timedelta(seconds=elapsed)
    at = next_attempt_at(T0, attempt, now, timedelta(seconds=budget))
    assert at == (None if wait is None else now + timedelta(seconds=wait))


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        ([], "delivered"),
        (["delivered", "delivered"], "delivered"),
        (["delivered", "failed"], "failed"),
        (["dropped", "delivered"], "dropped"),
        (["dropped", "failed"], "failed"),
    ],
)
def test_message_status(outcomes: list[str], status: str) -> None:
    assert message_status(outcomes) == status
