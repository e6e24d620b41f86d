"""Parse `cron = ...` schedules and compute their ticks; time is always passed in.

Cron expressions are matched by cronsim on wall-clock (naive) times in the
task's zone; this module then maps each wall-clock match to a UTC instant with
the DST rule runyard documents:

- a time that repeats on fall-back fires once, in its first pass, for jobs at
  fixed times (minute and hour fields not starting with `*`, as in Debian
  cron); interval jobs (`*/15 * * * *`) keep firing in real time through both
  passes, so they neither repeat an instant nor leave a gap;
- ticks that fall in the hour skipped on spring-forward fire once, at the first
  valid instant after the gap.

`@every <duration>` ticks are the Unix epoch plus whole intervals, in UTC, so a
restart never shifts them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from runyard.domain.durations import parse_duration
from runyard.domain.models import Schedule, ScheduleKind

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_EVERY = timedelta(seconds=1)

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_FIELD_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


class ScheduleError(ValueError):
    """A schedule expression or time zone that cannot be used; the message says why."""


def load_zone(name: str) -> ZoneInfo:
    """Return the IANA time zone `name`; raise ScheduleError when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown time zone {name!r}") from None


def parse_schedule(expression: str, timezone: str) -> Schedule:
    """Return the schedule written as `expression`, read in the IANA zone `timezone`.

    Accepted: 5 cron fields, 6 with leading seconds, @yearly @annually @monthly
    @weekly @daily @midnight @hourly, and `@every <duration>` (at least 1s).
    """
    load_zone(timezone)
    text = expression.strip()
    if text.startswith("@"):
        word, _, rest = text.partition(" ")
        word = word.lower()
        if word == "@every":
            every = _parse_every(rest.strip())
            return Schedule(expression, ScheduleKind.EVERY, timezone, every=every)
        if word == "@reboot":
            raise ScheduleError("@reboot is not supported; use run_on_start = true")
        if word not in ALIASES or rest.strip():
            raise ScheduleError(
                f"unknown schedule {text!r}; use 5 cron fields, @hourly, @daily, @weekly, "
                "@monthly, @yearly or @every <duration>"
            )
        cron = ALIASES[word]
    else:
        cron = " ".join(text.split())
    _check_cron(cron, expression)
    return Schedule(expression, ScheduleKind.CRON, timezone, cron=cron)


def _parse_every(text: str) -> timedelta:
    if not text:
        raise ScheduleError("@every needs a duration, like '@every 1h30m'")
    if text.startswith("-"):
        raise ScheduleError(f"@every needs a positive duration, got {text!r}")
    try:
        every = parse_duration(text)
    except ValueError:
        raise ScheduleError(
            f"@every needs a duration like 90s, 5m or 1h30m, got {text!r}"
        ) from None
    if every <= timedelta(0):
        raise ScheduleError(f"@every needs a positive duration, got {text!r}")
    if every < MIN_EVERY:
        raise ScheduleError(f"@every must be at least 1s, got {text!r}")
    return every


def _check_cron(cron: str, expression: str) -> None:
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 with "
            f"leading seconds, got {len(fields)} in {expression!r}"
        )
    try:
        CronSim(cron, datetime(2000, 1, 1))
    except CronSimError as exc:
        if str(exc) == "Bad day-of-month" and _only_impossible_date(fields):
            return  # valid syntax for a date that never exists (Feb 30): never fires
        offset = 6 - len(fields)
        for index, field in enumerate(fields):
            problem = _field_problem(index + offset, field)
            if problem:
                name = _FIELD_NAMES[index + offset]
                raise ScheduleError(f"{name} field: {problem} in {expression!r}") from None
        raise ScheduleError(f"invalid cron expression {expression!r}: {exc}") from None


def _only_impossible_date(fields: list[str]) -> bool:
    # cronsim refuses a day-of-month no listed month has; with every month
    # allowed it parses, so the syntax is fine and the date simply never comes.
    relaxed = [*fields]
    relaxed[-2] = "*"
    try:
        CronSim(" ".join(relaxed), datetime(2000, 1, 1))
    except CronSimError:
        return False
    return True


def _field_problem(field: int, text: str) -> str:
    """Return what is wrong with one cron field, or "" when nothing obvious is."""
    for term in text.split(","):
        problem = _term_problem(field, term)
        if problem:
            return problem
    return ""


def _term_problem(field: int, term: str) -> str:
    if not term:
        return "empty list item"
    if "/" in term:
        base, step = term.split("/", 1)
        if not step.isdigit():
            return f"step {step!r} is not a number"
        if int(step) == 0:
            return "step must be at least 1"
        return _term_problem(field, base)
    if field == 5 and "#" in term:
        base, nth = term.split("#", 1)
        if not nth.isdigit() or not 1 <= int(nth) <= 5:
            return f"{term!r}: the number after # must be 1-5"
        return _value_problem(field, base)
    if field == 5 and term.upper().endswith("L") and term.upper() != "L":
        return _value_problem(field, term[:-1])
    if field == 3 and term.upper() in ("L", "LW"):
        return ""
    if "-" in term:
        start, end = term.split("-", 1)
        problem = _value_problem(field, start) or _value_problem(field, end)
        if problem:
            return problem
        if _number(field, end) < _number(field, start):
            return f"range {term} runs backwards"
        return ""
    return _value_problem(field, term)


def _value_problem(field: int, value: str) -> str:
    if value == "*":
        return ""
    name = value.upper()
    if (field == 4 and name in _MONTH_NAMES) or (field == 5 and name in _DAY_NAMES):
        return ""
    if not value.isdigit():
        hint = {4: " or a month name like JAN", 5: " or a day name like MON"}.get(field, "")
        return f"{value!r} is not a number{hint}"
    low, high = _FIELD_RANGES[field]
    if not low <= int(value) <= high:
        return f"{int(value)} is out of range {low}-{high}"
    return ""


def _number(field: int, value: str) -> int:
    if value.isdigit():
        return int(value)
    if field == 4:
        return _MONTH_NAMES.index(value.upper()) + 1
    return _DAY_NAMES.index(value.upper())


def next_tick(schedule: Schedule, after: datetime) -> datetime | None:
    """Return the first tick strictly after `after` (aware), in UTC; None if it never fires."""
    return next(_ticks(schedule, after), None)


def ticks_between(schedule: Schedule, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """Return the first `limit` ticks t with start < t <= end, ascending, in UTC."""
    result: list[datetime] = []
    if limit <= 0:
        return result
    for tick in _ticks(schedule, start):
        if tick > end:
            break
        result.append(tick)
        if len(result) >= limit:
            break
    return result


def count_ticks_between(
    schedule: Schedule, start: datetime, end: datetime, cap: int = 1_000_000
) -> int:
    """Return how many ticks t have start < t <= end, counting no further than `cap`."""
    if schedule.kind is ScheduleKind.EVERY:
        every = _every(schedule)
        first = (_aware(start) - EPOCH) // every + 1
        last = (_aware(end) - EPOCH) // every
        return max(0, min(cap, last - first + 1))
    count = 0
    for tick in _ticks(schedule, start):
        if tick > end or count >= cap:
            break
        count += 1
    return count


def never_fires(schedule: Schedule, now: datetime) -> bool:
    """Return True when the schedule has no tick after `now`."""
    return next_tick(schedule, now) is None


def jitter_offset(task_name: str, jitter: timedelta) -> timedelta:
    """Return the task's fixed delay in [0, jitter), the same on every start of the daemon."""
    total = jitter // timedelta(microseconds=1)
    if total <= 0:
        return timedelta(0)
    digest = hashlib.sha256(task_name.encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big")
    return timedelta(microseconds=fraction * total >> 64)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def _every(schedule: Schedule) -> timedelta:
    if schedule.every is None or schedule.every <= timedelta(0):
        raise ValueError(f"schedule {schedule.expression!r} has no positive interval")
    return schedule.every


def _ticks(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Yield the ticks strictly after `after`, ascending, in UTC, without repeats."""
    after_utc = _aware(after)
    if schedule.kind is ScheduleKind.EVERY:
        every = _every(schedule)
        tick = EPOCH + ((after_utc - EPOCH) // every + 1) * every
        while True:
            yield tick
            tick += every
    zone = load_zone(schedule.timezone)
    local = after_utc.astimezone(zone)
    # In the second pass of a repeated hour, ticks of that pass lie later in
    # real time than earlier wall-clock times: start the walk before the fold.
    start = local.replace(tzinfo=None) - _fold_size(local.replace(tzinfo=None), zone)
    try:
        walls = CronSim(schedule.cron, start)
    except CronSimError:
        return  # a date that never exists, like Feb 30
    last: datetime | None = None
    for instant in _instants(walls, zone, _fixed_time(schedule.cron)):
        if instant > after_utc and (last is None or instant > last):
            last = instant
            yield instant


def _fixed_time(cron: str) -> bool:
    # Debian cron's rule: wall-clock handling only when neither the minute
    # nor the hour field starts with `*`.
    fields = cron.split()
    return not fields[-5].startswith("*") and not fields[-4].startswith("*")


def _instants(walls: Iterator[datetime], zone: ZoneInfo, fixed_time: bool) -> Iterator[datetime]:
    """Map wall-clock matches to UTC instants, ascending (repeats are left to the caller)."""
    fold_run: list[datetime] = []
    fold_size = timedelta(0)
    for wall in walls:
        size = _fold_size(wall, zone)
        if size and not fixed_time:
            if fold_run and wall - fold_run[0] >= fold_size:
                yield from _both_passes(fold_run, zone)
                fold_run = []
            fold_run.append(wall)
            fold_size = size
            continue
        if fold_run:
            yield from _both_passes(fold_run, zone)
            fold_run = []
        if _in_gap(wall, zone):
            yield _gap_end(wall, zone)
        else:
            yield wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    yield from _both_passes(fold_run, zone)


def _both_passes(walls: list[datetime], zone: ZoneInfo) -> Iterator[datetime]:
    for fold in (0, 1):
        for wall in walls:
            yield wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)


def _fold_size(wall: datetime, zone: ZoneInfo) -> timedelta:
    """Return how long the repeated period is when `wall` occurs twice, else 0."""
    early = wall.replace(tzinfo=zone, fold=0)
    late = wall.replace(tzinfo=zone, fold=1)
    early_offset, late_offset = early.utcoffset(), late.utcoffset()
    if early_offset is None or late_offset is None or early_offset == late_offset:
        return timedelta(0)
    if _in_gap(wall, zone):
        return timedelta(0)
    return abs(early_offset - late_offset)


def _in_gap(wall: datetime, zone: ZoneInfo) -> bool:
    local = wall.replace(tzinfo=zone, fold=0)
    return local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """Return the first valid instant after the skipped wall-clock time `wall`."""
    # The two readings of a skipped time bracket the transition instant.
    readings = sorted(wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    low, high = readings
    after_offset = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == after_offset:
            high = middle
        else:
            low = middle
    return high
