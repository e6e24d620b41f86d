"""RollingWindow: at most `limit` calls of a key in any rolling window, time passed in."""

from __future__ import annotations

import pytest

from runyard.domain.ratelimit import RollingWindow

LIMIT = 100


def calls(window: RollingWindow, key: str, times: list[float], limit: int = LIMIT) -> list[bool]:
    """Return what `allow` answered for a call of `key` at each of `times`."""
    return [window.allow(key, limit, now) for now in times]


@pytest.mark.parametrize(
    ("spacing", "label"),
    [(0.0, "all at once"), (0.1, "spread over 10s"), (0.59, "spread over 58.4s")],
)
def test_100_allowed_then_refused(spacing: float, label: str) -> None:
    window = RollingWindow(60.0)
    times = [1000.0 + index * spacing for index in range(LIMIT)]
    assert calls(window, "k", times) == [True] * LIMIT, label
    last = times[-1]
    assert calls(window, "k", [last, last + 0.001, 1000.0 + 59.999]) == [False] * 3


@pytest.mark.parametrize(
    ("first_batch_at", "second_batch_at", "probe_at", "allowed_at_probe"),
    [
        # 50 calls at t=0 and 50 at t=30, probed: the t=0 calls leave exactly 60s later
        (0.0, 30.0, 59.999, 0),
        (0.0, 30.0, 60.0, 50),
        (0.0, 30.0, 89.999, 50),  # only the t=0 half has left
        (0.0, 30.0, 90.0, 100),
        # a fixed window would start afresh at the minute boundary (t=60): rolling does not
        (59.0, 59.5, 61.0, 0),
        (59.0, 59.5, 118.999, 0),
        (59.0, 59.5, 119.0, 50),
        (59.0, 59.5, 119.5, 100),
    ],
)
def test_the_window_rolls(
    first_batch_at: float, second_batch_at: float, probe_at: float, allowed_at_probe: int
) -> None:
    window = RollingWindow(60.0)
    assert calls(window, "k", [first_batch_at] * 50 + [second_batch_at] * 50) == [True] * LIMIT
    answers = calls(window, "k", [probe_at] * (LIMIT + 10))
    assert answers == [True] * allowed_at_probe + [False] * (LIMIT + 10 - allowed_at_probe)


def test_no_more_than_limit_in_any_window() -> None:
    """A steady hammering: over any 60 s span, never more than 100 allowed calls."""
    window = RollingWindow(60.0)
    allowed_at = [now / 10 for now in range(0, 3000) if window.allow("k", LIMIT, now / 10)]
    for index, start in enumerate(allowed_at):
        inside = [t for t in allowed_at[index:] if t < start + 60.0]
        assert len(inside) <= LIMIT
    # And the limit is used, not undercut: 100 in the first minute, 100 more in each later one.
    assert len(allowed_at) == 5 * LIMIT


def test_refused_calls_are_not_counted() -> None:
    window = RollingWindow(60.0)
    assert calls(window, "k", [0.0] * LIMIT) == [True] * LIMIT
    # Hammering while refused must not push the next allowance further away.
    assert not any(calls(window, "k", [now / 10 for now in range(1, 600)]))
    assert calls(window, "k", [60.0] * LIMIT) == [True] * LIMIT
    assert window.allow("k", LIMIT, 60.0) is False


@pytest.mark.parametrize(
    ("times", "now", "expected"),
    [
        ([], 5.0, 0.0),  # a key never seen may call now
        ([10.0], 12.0, 0.0),  # a key under its limit may call now
        ([10.0] * (LIMIT - 1), 12.0, 0.0),
        ([10.0] * LIMIT, 10.0, 60.0),
        ([10.0] * LIMIT, 40.0, 30.0),
        ([10.0] * 50 + [40.0] * 50, 45.0, 25.0),  # until the oldest call leaves
        ([10.0] * LIMIT, 69.5, 0.5),
        ([10.0] * LIMIT, 70.0, 0.0),
        ([10.0] * LIMIT, 500.0, 0.0),  # never negative
    ],
)
def test_retry_after_a_refusal(times: list[float], now: float, expected: float) -> None:
    window = RollingWindow(60.0)
    assert all(calls(window, "k", times))
    assert window.retry_after("k", LIMIT, now) == pytest.approx(expected)
    if expected > 0:
        # Consistent with allow: still refused just before, allowed once it has passed.
        assert window.allow("k", LIMIT, now) is False
        assert window.allow("k", LIMIT, now + expected) is True


def test_keys_are_independent() -> None:
    window = RollingWindow(60.0)
    assert calls(window, "key-a", [0.0] * LIMIT) == [True] * LIMIT
    assert window.allow("key-a", LIMIT, 1.0) is False
    assert calls(window, "key-b", [1.0] * LIMIT) == [True] * LIMIT
    assert window.allow("key-b", LIMIT, 1.0) is False
    assert window.retry_after("key-c", LIMIT, 1.0) == 0.0
    assert window.allow("key-c", LIMIT, 1.0) is True
    # key-a's allowance came back at t=60, key-b's not yet
    assert window.allow("key-a", LIMIT, 60.0) is True
    assert window.allow("key-b", LIMIT, 60.0) is False


@pytest.mark.parametrize("limit", [1, 5, 250])
def test_the_limit_is_per_call(limit: int) -> None:
    window = RollingWindow(60.0)
    assert calls(window, "k", [0.0] * (limit + 3), limit) == [True] * limit + [False] * 3


def test_lowering_the_limit_applies_to_calls_already_made() -> None:
    # A config reload may lower rate_limit_per_minute while calls are in the window.
    window = RollingWindow(60.0)
    assert calls(window, "k", [0.0] * 10) == [True] * 10
    assert window.allow("k", 5, 1.0) is False
    assert window.allow("k", 20, 1.0) is True


@pytest.mark.parametrize(("length", "allowed_again_at"), [(1.0, 1.0), (0.25, 0.25), (3600, 3600)])
def test_window_length(length: float, allowed_again_at: float) -> None:
    window = RollingWindow(length)
    assert calls(window, "k", [0.0] * 3, 3) == [True] * 3
    assert window.allow("k", 3, allowed_again_at * 0.999) is False
    assert window.allow("k", 3, allowed_again_at) is True


def test_forget_idle_keeps_only_keys_called_within_the_window() -> None:
    window = RollingWindow(60.0)
    window.allow("old", LIMIT, 1000.0)
    window.allow("recent", LIMIT, 1050.0)
    window.forget_idle(1070.0)
    assert window.size() == 1
    # A forgotten key starts afresh, as it would have anyway: its calls were all too old.
    assert window.retry_after("old", 1, 1070.0) == 0.0
    assert window.retry_after("recent", 1, 1070.0) > 0.0
