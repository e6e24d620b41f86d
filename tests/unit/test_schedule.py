from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runyard.domain.models import Schedule, ScheduleKind
from runyard.domain.schedule import (
    ScheduleError,
    count_ticks_between,
    jitter_offset,
    never_fires,
    next_tick,
    parse_schedule,
    ticks_between,
)

RIGA = ZoneInfo("Europe/Riga")
NEW_YORK = ZoneInfo("America/New_York")
# Wednesday 2025-01-15 10:20:30 UTC.
REF = datetime(2025, 1, 15, 10, 20, 30, tzinfo=UTC)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local_ticks(expr: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[str]:
    schedule = parse_schedule(expr, str(zone))
    return [
        t.astimezone(zone).strftime("%m-%d %H:%M:%S%z")
        for t in ticks_between(schedule, start, end, 1000)
    ]


@pytest.mark.parametrize(
    ("expression", "cron"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
        ("  */5   * * * *  ", "*/5 * * * *"),
        ("0 30 2 * * *", "0 30 2 * * *"),
    ],
)
def test_parse_cron(expression: str, cron: str) -> None:
    assert parse_schedule(expression, "UTC") == Schedule(
        expression, ScheduleKind.CRON, "UTC", cron=cron
    )


@pytest.mark.parametrize(
    ("expression", "every"),
    [
        ("@every 1h30m", timedelta(hours=1, minutes=30)),
        ("@every 1s", timedelta(seconds=1)),
        ("@every 90s", timedelta(seconds=90)),
    ],
)
def test_parse_every(expression: str, every: timedelta) -> None:
    assert parse_schedule(expression, "Europe/Riga") == Schedule(
        expression, ScheduleKind.EVERY, "Europe/Riga", every=every
    )


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("@yearly", REF, utc(2026, 1, 1)),
        ("@monthly", REF, utc(2025, 2, 1)),
        ("@weekly", REF, utc(2025, 1, 19)),
        ("@daily", REF, utc(2025, 1, 16)),
        ("@hourly", REF, utc(2025, 1, 15, 11)),
        ("*/5 * * * *", REF, utc(2025, 1, 15, 10, 25)),
        ("*/5 * * * *", utc(2025, 1, 15, 10, 25), utc(2025, 1, 15, 10, 30)),  # strictly after
        ("*/10 * * * * *", REF, utc(2025, 1, 15, 10, 20, 40)),  # leading seconds
        ("30 0 12 * * *", REF, utc(2025, 1, 15, 12, 0, 30)),
        ("30 0 10 * * *", REF, utc(2025, 1, 16, 10, 0, 30)),
        ("0 9 * * MON", REF, utc(2025, 1, 20, 9)),
        ("0 9 * * mon-fri", REF, utc(2025, 1, 16, 9)),
        ("0 9 * JAN-MAR SAT,SUN", REF, utc(2025, 1, 18, 9)),
        ("0 0 1 feb *", REF, utc(2025, 2, 1)),
        ("0 0 29 2 *", REF, utc(2028, 2, 29)),
        ("0 12 L * *", REF, utc(2025, 1, 31, 12)),
    ],
)
def test_next_tick(expression: str, after: datetime, expected: datetime) -> None:
    tick = next_tick(parse_schedule(expression, "UTC"), after)
    assert tick == expected
    assert tick is not None and tick.tzinfo is UTC


def test_next_tick_reads_the_expression_in_its_zone() -> None:
    schedule = parse_schedule("0 9 * * *", "Europe/Riga")
    # 09:00 in Riga is 07:00 UTC in winter; `after` may be in any zone.
    assert next_tick(schedule, REF) == utc(2025, 1, 16, 7)
    assert next_tick(schedule, REF.astimezone(NEW_YORK)) == utc(2025, 1, 16, 7)


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_tick(parse_schedule("@daily", "UTC"), datetime(2025, 1, 1))


def test_day_of_month_or_day_of_week() -> None:
    # Both restricted: fires on the 13th AND on every Friday (Vixie cron's OR).
    schedule = parse_schedule("0 0 13 * FRI", "UTC")
    days = [
        t.date().isoformat() for t in ticks_between(schedule, utc(2025, 6, 1), utc(2025, 7, 1), 10)
    ]
    assert days == ["2025-06-06", "2025-06-13", "2025-06-20", "2025-06-27"]
    schedule = parse_schedule("0 0 14 * FRI", "UTC")
    days = [
        t.date().isoformat() for t in ticks_between(schedule, utc(2025, 6, 1), utc(2025, 7, 1), 10)
    ]
    assert days == ["2025-06-06", "2025-06-13", "2025-06-14", "2025-06-20", "2025-06-27"]
    # One of them a star: both must match (here: every day of the month that is a Friday).
    schedule = parse_schedule("0 0 * * FRI", "UTC")
    assert len(ticks_between(schedule, utc(2025, 6, 1), utc(2025, 7, 1), 10)) == 4


@pytest.mark.parametrize(
    "after",
    [
        utc(2025, 1, 15, 10, 0),
        utc(2025, 1, 15, 10, 7, 13),
        utc(2025, 1, 15, 10, 29, 59),
        datetime(2025, 1, 15, 12, 3, tzinfo=RIGA),
    ],
)
def test_every_is_anchored_to_the_epoch(after: datetime) -> None:
    schedule = parse_schedule("@every 7m", "Europe/Riga")
    ticks = ticks_between(schedule, after, utc(2025, 1, 15, 11), 100)
    # Whatever the starting point, the ticks are whole multiples of 7m since the epoch.
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert all((t - epoch) % timedelta(minutes=7) == timedelta(0) for t in ticks)
    assert ticks[-1] == utc(2025, 1, 15, 10, 56)
    assert ticks[0] > after
    assert all(b - a == timedelta(minutes=7) for a, b in zip(ticks, ticks[1:], strict=False))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "minute field: 61 is out of range 0-59 in '61 * * * *'"),
        ("* 24 * * *", "hour field: 24 is out of range 0-23"),
        ("0 0 32 * *", "day-of-month field: 32 is out of range 1-31"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 * 13 *", "month field: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("0 0 * * FOO", "day-of-week field: 'FOO' is not a number or a day name like MON"),
        ("0 0 * BAR *", "month field: 'BAR' is not a number or a month name like JAN"),
        ("60 * * * * *", "second field: 60 is out of range 0-59"),
        ("x * * * *", "minute field: 'x' is not a number"),
        ("*/0 * * * *", "minute field: step must be at least 1"),
        ("*/x * * * *", "minute field: step 'x' is not a number"),
        ("30-10 * * * *", "minute field: range 30-10 runs backwards"),
        ("1,,2 * * * *", "minute field: empty list item"),
        ("0 9 * * sat-sun", "day-of-week field: range sat-sun runs backwards"),
        ("0 0 * * 1#6", "day-of-week field: '1#6': the number after # must be 1-5"),
        ("* * *", "expected 5 fields (minute hour day-of-month month day-of-week) or 6"),
        ("* * * * * * *", "got 7 in '* * * * * * *'"),
        ("", "expected 5 fields"),
        ("@every 0s", "@every needs a positive duration, got '0s'"),
        ("@every -5m", "@every needs a positive duration, got '-5m'"),
        ("@every banana", "@every needs a duration like 90s, 5m or 1h30m, got 'banana'"),
        ("@every", "@every needs a duration, like '@every 1h30m'"),
        ("@every 500ms", "@every must be at least 1s, got '500ms'"),
        ("@reboot", "@reboot is not supported; use run_on_start = true"),
        ("@fortnightly", "unknown schedule '@fortnightly'"),
        ("@daily 5", "unknown schedule '@daily 5'"),
    ],
)
def test_parse_errors(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expression, "UTC")
    assert message in str(caught.value)


@pytest.mark.parametrize("zone", ["Mars/Base", "", "../etc/passwd", "/etc/localtime"])
def test_unknown_zone(zone: str) -> None:
    with pytest.raises(ScheduleError, match="unknown time zone"):
        parse_schedule("@daily", zone)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 30 FEB *"])
def test_impossible_date_never_fires(expression: str) -> None:
    schedule = parse_schedule(expression, "Europe/Riga")
    started = time.monotonic()
    assert next_tick(schedule, REF) is None
    assert never_fires(schedule, REF)
    assert ticks_between(schedule, REF, REF + timedelta(days=3650), 10) == []
    assert count_ticks_between(schedule, REF, REF + timedelta(days=3650)) == 0
    assert time.monotonic() - started < 1


def test_possible_schedules_fire() -> None:
    assert not never_fires(parse_schedule("0 0 29 2 *", "UTC"), REF)
    assert not never_fires(parse_schedule("0 0 30 2 MON", "UTC"), REF)  # OR: Mondays


# Europe/Riga 2025: 03:00 -> 04:00 on 03-30 (01:00 UTC); 04:00 -> 03:00 on 10-26 (01:00 UTC).
@pytest.mark.parametrize(
    ("expression", "start", "end", "expected"),
    [
        # Spring: the skipped 03:30 fires once, at the first valid instant.
        (
            "30 3 * * *",
            datetime(2025, 3, 29, 12, tzinfo=RIGA),
            datetime(2025, 3, 31, 12, tzinfo=RIGA),
            ["03-30 04:00:00+0300", "03-31 03:30:00+0300"],
        ),
        (
            "0 30 3 * * *",  # 6 fields: same rule (cronsim alone skips the day)
            datetime(2025, 3, 29, 12, tzinfo=RIGA),
            datetime(2025, 3, 31, 12, tzinfo=RIGA),
            ["03-30 04:00:00+0300", "03-31 03:30:00+0300"],
        ),
        (
            "*/15 3 * * *",  # four skipped ticks collapse into one (cronsim alone fires none)
            datetime(2025, 3, 29, 12, tzinfo=RIGA),
            datetime(2025, 3, 30, 12, tzinfo=RIGA),
            ["03-30 04:00:00+0300"],
        ),
        (
            "*/15 * * * *",
            datetime(2025, 3, 30, 2, 30, tzinfo=RIGA),
            datetime(2025, 3, 30, 4, 30, tzinfo=RIGA),
            [
                "03-30 02:45:00+0200",
                "03-30 04:00:00+0300",
                "03-30 04:15:00+0300",
                "03-30 04:30:00+0300",
            ],
        ),
        # Fall: the repeated 03:30 fires once, in the first pass.
        (
            "30 3 * * *",
            datetime(2025, 10, 25, 12, tzinfo=RIGA),
            datetime(2025, 10, 27, 12, tzinfo=RIGA),
            ["10-26 03:30:00+0300", "10-27 03:30:00+0200"],
        ),
        (
            "0 30 3 * * *",  # 6 fields: same rule (cronsim alone fires twice)
            datetime(2025, 10, 25, 12, tzinfo=RIGA),
            datetime(2025, 10, 27, 12, tzinfo=RIGA),
            ["10-26 03:30:00+0300", "10-27 03:30:00+0200"],
        ),
        # Interval jobs keep firing in real time through both passes.
        (
            "*/30 * * * *",
            datetime(2025, 10, 26, 2, 15, tzinfo=RIGA),
            datetime(2025, 10, 26, 4, 15, tzinfo=RIGA),
            [
                "10-26 02:30:00+0300",
                "10-26 03:00:00+0300",
                "10-26 03:30:00+0300",
                "10-26 03:00:00+0200",
                "10-26 03:30:00+0200",
                "10-26 04:00:00+0200",
            ],
        ),
    ],
)
def test_dst_riga(expression: str, start: datetime, end: datetime, expected: list[str]) -> None:
    assert local_ticks(expression, RIGA, start, end) == expected


# America/New_York 2025: 02:00 -> 03:00 on 03-09; 02:00 -> 01:00 on 11-02.
@pytest.mark.parametrize(
    ("expression", "start", "end", "expected"),
    [
        (
            "30 2 * * *",
            datetime(2025, 3, 8, 12, tzinfo=NEW_YORK),
            datetime(2025, 3, 10, 12, tzinfo=NEW_YORK),
            ["03-09 03:00:00-0400", "03-10 02:30:00-0400"],
        ),
        (
            "30 1 * * *",
            datetime(2025, 11, 1, 12, tzinfo=NEW_YORK),
            datetime(2025, 11, 3, 12, tzinfo=NEW_YORK),
            ["11-02 01:30:00-0400", "11-03 01:30:00-0500"],
        ),
        (
            "0 * * * *",
            datetime(2025, 11, 2, 0, 30, tzinfo=NEW_YORK),
            datetime(2025, 11, 2, 2, 30, tzinfo=NEW_YORK),
            ["11-02 01:00:00-0400", "11-02 01:00:00-0500", "11-02 02:00:00-0500"],
        ),
    ],
)
def test_dst_new_york(expression: str, start: datetime, end: datetime, expected: list[str]) -> None:
    assert local_ticks(expression, NEW_YORK, start, end) == expected


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        (RIGA, datetime(2025, 10, 26)),
        (RIGA, datetime(2025, 3, 30)),
        (NEW_YORK, datetime(2025, 11, 2)),
    ],
)
def test_quarter_hours_across_dst_neither_repeat_nor_skip(zone: ZoneInfo, day: datetime) -> None:
    schedule = parse_schedule("*/15 * * * *", str(zone))
    start = day.replace(tzinfo=zone) - timedelta(hours=2)
    ticks = ticks_between(schedule, start, start + timedelta(hours=8), 1000)
    assert len(set(ticks)) == len(ticks)
    assert ticks == sorted(ticks)
    gaps = {b - a for a, b in zip(ticks, ticks[1:], strict=False)}
    assert gaps == {timedelta(minutes=15)}


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        # In the first pass of the repeated hour: the second pass still fires.
        (utc(2025, 10, 26, 0, 40), datetime(2025, 10, 26, 3, 45, tzinfo=RIGA)),
        # In the second pass: the next tick of that pass.
        (utc(2025, 10, 26, 1, 10), datetime(2025, 10, 26, 3, 15, fold=1, tzinfo=RIGA)),
    ],
)
def test_next_tick_from_inside_a_repeated_hour(after: datetime, expected: datetime) -> None:
    quarter = parse_schedule("*/15 * * * *", "Europe/Riga")
    assert next_tick(quarter, after) == expected.astimezone(UTC)
    # The fixed-time tick already fired in the first pass: next one is tomorrow.
    daily = parse_schedule("30 3 * * *", "Europe/Riga")
    assert next_tick(daily, after) == datetime(2025, 10, 27, 3, 30, tzinfo=RIGA)


def test_utc_and_every_ignore_dst() -> None:
    schedule = parse_schedule("@every 1h", "Europe/Riga")
    start = datetime(2025, 10, 26, tzinfo=RIGA)
    assert count_ticks_between(schedule, start, start + timedelta(days=1)) == 25


@pytest.mark.parametrize(
    ("expression", "days", "count"),
    [
        ("* * * * *", 3, 4320),
        ("*/5 * * * *", 1, 288),
        ("@hourly", 7, 168),
        ("@every 1m", 3, 4320),
        ("@every 7s", 1, 12343),  # 86400 / 7 = 12342.9
        ("0 0 30 2 *", 365, 0),
    ],
)
def test_counts(expression: str, days: int, count: int) -> None:
    schedule = parse_schedule(expression, "UTC")
    end = REF + timedelta(days=days)
    assert count_ticks_between(schedule, REF, end) == count
    assert len(ticks_between(schedule, REF, end, 100_000)) == count


def test_ticks_between_bounds_and_limit() -> None:
    schedule = parse_schedule("@hourly", "UTC")
    start, end = utc(2025, 1, 1), utc(2025, 1, 1, 5)
    assert ticks_between(schedule, start, end, 100) == [utc(2025, 1, 1, h) for h in range(1, 6)]
    assert ticks_between(schedule, start, end, 2) == [utc(2025, 1, 1, 1), utc(2025, 1, 1, 2)]
    assert ticks_between(schedule, start, end, 0) == []
    assert ticks_between(schedule, end, start, 10) == []
    assert count_ticks_between(schedule, start, end, cap=3) == 3
    every = parse_schedule("@every 1h", "UTC")
    assert count_ticks_between(every, start, end, cap=3) == 3
    assert count_ticks_between(every, end, start) == 0


@pytest.mark.parametrize("name", ["backup", "disk-report", "a", "x" * 100])
@pytest.mark.parametrize("jitter", [timedelta(seconds=1), timedelta(minutes=5), timedelta(hours=6)])
def test_jitter_is_deterministic_and_in_range(name: str, jitter: timedelta) -> None:
    offset = jitter_offset(name, jitter)
    assert offset == jitter_offset(name, jitter)
    assert timedelta(0) <= offset < jitter


def test_jitter_spreads_tasks_and_zero_means_none() -> None:
    window = timedelta(minutes=10)
    offsets = {jitter_offset(f"task-{i}", window) for i in range(50)}
    assert len(offsets) == 50
    assert jitter_offset("backup", timedelta(0)) == timedelta(0)
    # Fixed value: sha256, not the per-process salted hash().
    assert jitter_offset("backup", window) == jitter_offset("backup", window)
