"""domain/words.py: schedules, spans and durations in words, secret-looking names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runyard.domain.schedule import parse_schedule
from runyard.domain.words import (
    MASK,
    duration,
    looks_secret,
    masked_env,
    next_ticks,
    relative,
    schedule_words,
    span,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "zone", "words"),
    [
        ("* * * * *", "UTC", "every minute"),
        ("*/5 * * * *", "UTC", "every 5 minutes"),
        ("15 * * * *", "UTC", "every hour at minute 15"),
        ("@hourly", "UTC", "every hour at minute 0"),
        ("0 3 * * *", "Europe/Riga", "daily at 03:00 (Europe/Riga)"),
        ("@daily", "UTC", "daily at 00:00 (UTC)"),
        ("30 6 * * 1", "UTC", "every Monday at 06:30 (UTC)"),
        ("0 6 * * MON-FRI", "UTC", "weekdays at 06:00 (UTC)"),
        ("0 0 1 * *", "UTC", "monthly on day 1 at 00:00 (UTC)"),
        ("0 0 1 1 *", "UTC", "every year on 1 January at 00:00 (UTC)"),
        ("@every 10m", "UTC", "every 10 minutes"),
        ("@every 1h", "UTC", "every hour"),
        ("@every 90s", "UTC", "every 90 seconds"),
        ("0 9-17 * * *", "UTC", "cron `0 9-17 * * *` (UTC)"),
    ],
)
def test_schedules_in_words(expression: str, zone: str, words: str) -> None:
    assert schedule_words(parse_schedule(expression, zone)) == words


def test_next_ticks_are_the_next_five_in_order() -> None:
    ticks = next_ticks(parse_schedule("*/10 * * * *", "UTC"), NOW, 5)
    assert ticks == [NOW + timedelta(minutes=10 * i) for i in range(1, 6)]


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_TOKEN", True),
        ("db_password", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("SSH_PRIVATE_KEY", True),
        ("DATABASE_URL", True),
        ("GREETING_STYLE", False),
        ("PATH", False),
        ("HOME", False),
    ],
)
def test_secret_looking_names(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_masked_env_hides_only_secret_values() -> None:
    assert masked_env((("API_TOKEN", "x"), ("MODE", "fast"))) == [
        ("API_TOKEN", MASK),
        ("MODE", "fast"),
    ]


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "0 s"), (45, "45 s"), (120, "2 min"), (3 * 3600, "3 h"), (3 * 3600 + 300, "3 h 5 min")],
)
def test_spans(seconds: float, words: str) -> None:
    assert span(seconds) == words


def test_relative_times() -> None:
    assert relative(NOW + timedelta(hours=3), NOW) == "in 3 h"
    assert relative(NOW - timedelta(minutes=2), NOW) == "2 min ago"
    assert relative(NOW, NOW) == "now"


@pytest.mark.parametrize(
    ("milliseconds", "words"),
    [
        (None, "–"),
        (850, "850 ms"),
        (12_400, "12.4 s"),
        (182_000, "3 min 2 s"),
        (3_840_000, "1 h 4 min"),
    ],
)
def test_durations(milliseconds: int | None, words: str) -> None:
    assert duration(milliseconds) == words
