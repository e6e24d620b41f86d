"""The schedule keys of a task (`cron`, `timezone`) and the `[scheduler]` table."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from runyard.config.checks import Problems, check_keys, check_str, check_table, key_path
from runyard.domain.models import Schedule
from runyard.domain.schedule import ScheduleError, load_zone, never_fires, parse_schedule

LOCALTIME = Path("/etc/localtime")
SCHEDULER_KEYS = ("timezone",)
# Keys that only matter for a task with a schedule (run_on_start does not: it
# fires once at start either way).
_NEEDS_CRON = ("timezone", "jitter")


def check_timezone(value: object, path: str, problems: Problems) -> str | None:
    """Return `value` when it names an IANA time zone such as "Europe/Riga"."""
    name = check_str(value, path, problems, non_empty=True)
    if name is None:
        return None
    try:
        load_zone(name)
    except ScheduleError as exc:
        problems.add(path, str(exc))
        return None
    return name


def host_timezone(environ: Mapping[str, str] = os.environ, localtime: Path = LOCALTIME) -> str:
    """Return the host's IANA zone: $TZ when valid, else what /etc/localtime links to, else UTC."""
    candidates = [environ.get("TZ", "").removeprefix(":")]
    try:
        target = os.path.realpath(localtime)
    except OSError:
        target = ""
    _, marker, name = target.partition("zoneinfo/")
    if marker:
        # Some systems link into the posix/ or right/ copies of the database.
        for prefix in ("posix/", "right/"):
            name = name.removeprefix(prefix)
        candidates.append(name)
    for candidate in candidates:
        if not candidate:
            continue
        try:
            load_zone(candidate)
        except ScheduleError:
            continue
        return candidate
    return "UTC"


def parse_scheduler(value: object, environ: Mapping[str, str], problems: Problems) -> str:
    """Return the default time zone of every task: `[scheduler] timezone`, else the host's."""
    table = check_table(value, "scheduler", problems)
    if table is None:
        return "UTC"
    check_keys(table, "scheduler", SCHEDULER_KEYS, problems)
    if "timezone" in table:
        zone = check_timezone(table["timezone"], "scheduler.timezone", problems)
        if zone is not None:
            return zone
    return host_timezone(environ)


def resolve_schedule(
    fields: dict[str, object],
    own_keys: set[str],
    path: str,
    default_timezone: str,
    now: datetime,
    problems: Problems,
) -> Schedule | None:
    """Pop `cron` and `timezone` from a task's merged fields; return its schedule.

    `own_keys` are the keys the task sets itself, warned about when they do
    nothing; inherited ones are not, since [defaults] serves tasks with and
    without a schedule alike.
    """
    zone = str(fields.pop("timezone", default_timezone))
    cron = fields.pop("cron", None)
    if not isinstance(cron, str):
        for key in _NEEDS_CRON:
            if key in own_keys:
                problems.warn(key_path(path, key), "has no effect without cron")
        return None
    cron_path = key_path(path, "cron")
    try:
        schedule = parse_schedule(cron, zone)
    except ScheduleError as exc:
        problems.add(cron_path, str(exc))
        return None
    if never_fires(schedule, now):
        problems.warn(cron_path, f"{cron!r} never fires")
    return schedule
