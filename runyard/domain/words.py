"""Plain words for what the dashboard shows: schedules, spans of time, secret-looking names.

Pure functions: time is passed in.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from runyard.domain.models import Schedule, ScheduleKind
from runyard.domain.schedule import ALIASES, next_tick

# Env names whose values the dashboard masks: anything that reads like a credential.
_SECRET_NAME = re.compile(
    r"(SECRET|TOKEN|PASSW(OR)?D|PASS$|PWD|KEY|CREDENTIAL|AUTH|PRIVATE|SIGNATURE|COOKIE|SESSION|DSN|DATABASE_URL)",
    re.IGNORECASE,
)
MASK = "••••••"

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def looks_secret(name: str) -> bool:
    """Return whether an environment variable called `name` likely holds a secret."""
    return _SECRET_NAME.search(name) is not None


def masked_env(env: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """Return (name, value) pairs with the values of secret-looking names masked."""
    return [(name, MASK if looks_secret(name) else value) for name, value in env]


def span(seconds: float) -> str:
    """Return a length of time in short words: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    whole = int(abs(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(at: datetime, now: datetime) -> str:
    """Return how far `at` is from `now`: `in 3 h`, `2 min ago`, `now`."""
    seconds = (at - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {span(seconds)}" if seconds > 0 else f"{span(seconds)} ago"


def duration(milliseconds: int | None) -> str:
    """Return a run's duration: `850 ms`, `12.4 s`, `3 min 2 s`, `1 h 4 min`; `–` when none."""
    if milliseconds is None:
        return "–"
    if milliseconds < 1000:
        return f"{milliseconds} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def next_ticks(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """Return the next `count` ticks of a schedule after `after` (fewer if it stops firing)."""
    ticks: list[datetime] = []
    moment = after
    while len(ticks) < count:
        tick = next_tick(schedule, moment)
        if tick is None:
            break
        ticks.append(tick)
        moment = tick
    return ticks


def schedule_words(schedule: Schedule) -> str:
    """Return a schedule in words: `every 5 minutes`, `daily at 03:00 (UTC)`, ...

    Common shapes are put in words; anything else is shown as its cron fields.
    The zone is always named.
    """
    zone = f" ({schedule.timezone})"
    if schedule.kind is ScheduleKind.EVERY and schedule.every is not None:
        return f"every {_interval(schedule.every)}"
    fields = (schedule.cron or ALIASES.get(schedule.expression, schedule.expression)).split()
    if len(fields) == 6:
        if fields[0] != "0":
            return f"cron `{schedule.expression}`{zone}"
        fields = fields[1:]
    if len(fields) != 5:
        return f"cron `{schedule.expression}`{zone}"
    minute, hour, day, month, weekday = fields
    if (minute, hour, day, month, weekday) == ("*", "*", "*", "*", "*"):
        return "every minute"
    step = re.fullmatch(r"\*/(\d+)", minute)
    if step and (hour, day, month, weekday) == ("*", "*", "*", "*"):
        return f"every {step.group(1)} minutes"
    if not (minute.isdigit() and (hour.isdigit() or hour == "*")):
        return f"cron `{schedule.expression}`{zone}"
    if hour == "*":
        if (day, month, weekday) == ("*", "*", "*"):
            return f"every hour at minute {int(minute)}"
        return f"cron `{schedule.expression}`{zone}"
    clock = f"{int(hour):02d}:{int(minute):02d}"
    if (day, month, weekday) == ("*", "*", "*"):
        return f"daily at {clock}{zone}"
    if (day, month) == ("*", "*") and weekday.isdigit() and int(weekday) <= 7:
        return f"every {_DAYS[int(weekday)]} at {clock}{zone}"
    if (day, month) == ("*", "*") and weekday in ("1-5", "MON-FRI"):
        return f"weekdays at {clock}{zone}"
    if day.isdigit() and (month, weekday) == ("*", "*"):
        return f"monthly on day {int(day)} at {clock}{zone}"
    if day.isdigit() and month.isdigit() and weekday == "*" and 1 <= int(month) <= 12:
        return f"every year on {int(day)} {_MONTHS[int(month) - 1]} at {clock}{zone}"
    return f"cron `{schedule.expression}`{zone}"


def _interval(every: timedelta) -> str:
    seconds = int(every.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            return f"{count} {unit}s" if count != 1 else unit
    return f"{seconds} seconds" if seconds != 1 else "second"
