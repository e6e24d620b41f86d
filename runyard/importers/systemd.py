"""Translate systemd timers (and the services they start) into runyard tasks.

- `OnCalendar=` -> `cron`, where a cron expression can say the same: the
  shorthands (`daily`, `weekly`, ...), or `[weekday] [*-]month-day
  hour:minute[:second] [zone]` with `*`, lists, `a..b` ranges and `/step`
  repetitions. Seconds other than 0 use runyard's six-field form; a zone
  becomes `timezone`. Not expressible (said so, with the reason): a fixed year,
  the last days of a month (`~`), and a weekday together with a day of month
  (systemd requires both; cron fires on either).
- `Persistent=true` -> `catch_up = "latest"` (run once for what was missed
  while down); otherwise `catch_up = "skip"`. `RandomizedDelaySec=` -> `jitter`.
- The service's `ExecStart=` lines -> `run` (one per line, run in order,
  stopping at the first failure, as a oneshot service does); systemd's
  quoting is kept by re-quoting each word for the shell. `WorkingDirectory=`,
  `Environment=`, `EnvironmentFile=` -> `working_dir`, `env`, `env_file`;
  a service starts with a clean environment -> `env_base = "clean"` with
  systemd's default `PATH`. `Description=` -> `description`.
- Timers on elapsed time: `OnUnitActiveSec=`/`OnUnitInactiveSec=` ->
  `cron = "@every ..."` (on the clock rather than after the last run: said
  so); `OnBootSec=`/`OnStartupSec=` -> `run_on_start = true` (without the
  delay: said so). `OnActiveSec=`, another user's service (`User=`) and
  specifiers (`%h`, `%i`, ...) are reported as not translated.

Pure: the caller reads the unit files.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from runyard.domain.durations import parse_duration
from runyard.importers.common import Imported, Skipped, unique_name

SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
}
_WEEKDAYS = {
    "mon": 1, "monday": 1, "tue": 2, "tuesday": 2, "wed": 3, "wednesday": 3,
    "thu": 4, "thursday": 4, "fri": 5, "friday": 5, "sat": 6, "saturday": 6,
    "sun": 0, "sunday": 0,
}  # fmt: skip
# (lowest, highest) of each cron field, for `a/step` -> `a-highest/step`.
_RANGES = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "day": (1, 31), "month": (1, 12)}


class CalendarError(ValueError):
    """An OnCalendar= expression cron cannot express."""


@dataclass(frozen=True)
class Unit:
    """A unit file: its name and its `[Section] Key=` values, in order (keys repeat)."""

    name: str
    sections: Mapping[str, list[tuple[str, str]]]

    def values(self, section: str, key: str) -> list[str]:
        return [value for name, value in self.sections.get(section, []) if name == key]

    def last(self, section: str, key: str) -> str | None:
        found = self.values(section, key)
        return found[-1] if found else None


def parse_unit(name: str, text: str) -> Unit:
    """Read a unit file: sections, `Key=value` lines, `\\` continuations, comments."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return Unit(name, sections)


def calendar_to_cron(expression: str) -> tuple[str, str | None]:
    """Return (cron expression, zone or None) for an OnCalendar= value; CalendarError if none."""
    tokens = expression.split()
    zone = None
    if len(tokens) > 1 and _is_zone(tokens[-1]):
        zone = "UTC" if tokens[-1].upper() == "UTC" else tokens[-1]
        tokens = tokens[:-1]
    if len(tokens) == 1 and tokens[0].lower() in _SHORTHANDS:
        tokens = _SHORTHANDS[tokens[0].lower()].split()
    weekdays = "*"
    if tokens and re.fullmatch(r"[A-Za-z][A-Za-z.,]*", tokens[0]):
        weekdays = _weekdays(tokens.pop(0))
    date, time = "*-*-*", "00:00:00"
    for token in tokens:
        if ":" in token:
            time = token
        elif "-" in token or "~" in token:
            date = token
        else:
            raise CalendarError(f"cannot read {token!r}")
    if "~" in date:
        raise CalendarError("`~` (days counted from the end of the month) has no cron form")
    parts = date.split("-")
    if len(parts) == 2:
        parts = ["*", *parts]
    if len(parts) != 3:
        raise CalendarError(f"cannot read the date {date!r}")
    year, month, day = parts
    if year != "*":
        raise CalendarError(f"a fixed year ({year}) has no cron form")
    clock = time.split(":")
    if len(clock) == 2:
        clock.append("00")
    if len(clock) != 3:
        raise CalendarError(f"cannot read the time {time!r}")
    hour, minute, second = clock
    fields = {
        "second": _field(second, "second"),
        "minute": _field(minute, "minute"),
        "hour": _field(hour, "hour"),
        "day": _field(day, "day"),
        "month": _field(month, "month"),
    }
    if weekdays != "*" and fields["day"] != "*":
        raise CalendarError(
            "a weekday together with a day of the month: systemd fires when both match, "
            "cron when either does"
        )
    five = f"{fields['minute']} {fields['hour']} {fields['day']} {fields['month']} {weekdays}"
    if fields["second"] in ("0", "00"):
        return five, zone
    return f"{fields['second']} {five}", zone


def _is_zone(token: str) -> bool:
    return token.upper() == "UTC" or bool(re.fullmatch(r"[A-Za-z]+(/[A-Za-z0-9_+-]+)+", token))


def _weekdays(token: str) -> str:
    items = []
    for item in token.split(","):
        ends = item.split("..")
        if len(ends) > 2 or not all(end.lower() in _WEEKDAYS for end in ends):
            raise CalendarError(f"cannot read the weekday {item!r}")
        numbers = [_WEEKDAYS[end.lower()] for end in ends]
        if len(numbers) == 2 and numbers[1] == 0:
            numbers[1] = 7  # Sat..Sun: cron's 7 is Sunday too
        items.append("-".join(str(number) for number in numbers))
    return ",".join(items)


def _field(text: str, name: str) -> str:
    if text == "*":
        return "*"
    low, high = _RANGES[name]
    items = []
    for item in text.split(","):
        if "." in item.replace("..", "") or not re.fullmatch(r"[\d.*/]+", item):
            raise CalendarError(f"cannot read the {name} {item!r}")
        base, _, step = item.partition("/")
        start, _, end = base.partition("..")
        values = [value for value in (start, end) if value and value != "*"]
        if any(not low <= int(value) <= high for value in values):
            raise CalendarError(f"{name} {item!r} is out of range {low}-{high}")
        start = str(int(start)) if start != "*" else "*"
        cron = start if not end else f"{start}-{int(end)}"
        if step:
            if not end and start != "*":
                cron = f"{start}-{high}"
            cron += f"/{int(step)}"
        items.append(cron)
    return ",".join(items)


def import_timers(
    timers: list[Unit],
    services: Mapping[str, Unit | None],
    *,
    user: str,
    is_user: Callable[[str], bool],
    home: str,
) -> Imported:
    """Translate `timers`; `services[name]` is the unit each starts (None: not found).

    `user`: who runs the daemon; `is_user(name_or_uid)` says whether `User=`
    names them. A service of another user is reported. `home`: that user's
    home, for `WorkingDirectory=~`.
    """
    result = Imported()
    for timer in timers:
        target = timer.last("Timer", "Unit") or timer.name.removesuffix(".timer") + ".service"
        service = services.get(target)
        if service is None:
            result.skipped.append(Skipped(0, timer.name, f"its service {target} was not found"))
            continue
        problem, keys = _service_keys(service, user, is_user, home)
        if problem:
            result.skipped.append(Skipped(0, service.name, problem))
            continue
        schedules, on_boot = _schedules(timer, result)
        if not schedules and not on_boot:
            result.skipped.append(Skipped(0, timer.name, "no OnCalendar= to translate"))
            continue
        base = _name(timer.name.removesuffix(".timer"))
        description = timer.last("Unit", "Description") or service.last("Unit", "Description")
        for index, schedule in enumerate(schedules or [{}]):
            task: dict[str, object] = {"description": description} if description else {}
            task.update(schedule)
            if on_boot and index == 0:
                task["run_on_start"] = True
            if "cron" in schedule:
                task.update(_timing(timer, result))
            task.update(keys)
            result.add(unique_name(result.tasks, base), task, 0, timer.name)
    return result


def _schedules(timer: Unit, result: Imported) -> tuple[list[dict[str, object]], bool]:
    """(the `cron` (+ `timezone`) of each schedule of `timer`, whether it fires at boot)."""
    schedules: list[dict[str, object]] = []
    for expression in timer.values("Timer", "OnCalendar"):
        try:
            cron, zone = calendar_to_cron(expression)
        except CalendarError as error:
            result.skipped.append(Skipped(0, f"{timer.name}: OnCalendar={expression}", str(error)))
            continue
        schedules.append({"cron": cron, "timezone": zone} if zone else {"cron": cron})
    for key in ("OnUnitActiveSec", "OnUnitInactiveSec"):
        for value in timer.values("Timer", key):
            seconds = _seconds(value)
            where = f"{timer.name}: {key}={value}"
            if not seconds:
                result.skipped.append(Skipped(0, where, "cannot read the interval"))
                continue
            schedules.append({"cron": f"@every {seconds}s"})
            result.skipped.append(
                Skipped(0, where, f'translated as cron = "@every {seconds}s": runyard fires '
                        f"every {value} on the clock, not {value} after the service last ran")
            )  # fmt: skip
    for value in timer.values("Timer", "OnActiveSec"):
        result.skipped.append(
            Skipped(
                0,
                f"{timer.name}: OnActiveSec={value}",
                "a delay after the timer itself starts has no runyard form",
            )  # fmt: skip
        )
    on_boot = False
    for key in ("OnBootSec", "OnStartupSec"):
        for value in timer.values("Timer", key):
            on_boot = True
            if _seconds(value) != 0:
                result.skipped.append(
                    Skipped(
                        0,
                        f"{timer.name}: {key}={value}",
                        "translated as run_on_start = true: runs when the daemon "
                        "starts, without the delay",
                    )  # fmt: skip
                )
    return schedules, on_boot


def _timing(timer: Unit, result: Imported) -> dict[str, object]:
    """`catch_up` from Persistent=, `jitter` from RandomizedDelaySec=."""
    persistent = (timer.last("Timer", "Persistent") or "").lower()
    keys: dict[str, object] = {
        "catch_up": "latest" if persistent in ("true", "yes", "1", "on") else "skip"
    }
    delay = timer.last("Timer", "RandomizedDelaySec")
    if delay:
        jitter = _seconds(delay)
        if jitter is None:
            result.skipped.append(
                Skipped(
                    0,
                    f"{timer.name}: RandomizedDelaySec={delay}",
                    "cannot read the duration; no jitter set",
                )  # fmt: skip
            )
        elif jitter:
            keys["jitter"] = f"{jitter}s"
    return keys


def _service_keys(
    service: Unit, user: str, is_user: Callable[[str], bool], home: str
) -> tuple[str | None, dict[str, object]]:
    """(why the service cannot be translated, or None; its task keys)."""
    runs_as = service.last("Service", "User") or ""
    other_user = bool(runs_as) and not is_user(runs_as)
    if other_user and (user != "root" or runs_as.isdigit()):
        return (
            f"runs as {runs_as} (User=); a task runs as another user than the daemon's "
            f"({user}) only when the daemon runs as root, and names the user"
            if user != "root"
            else f"runs as uid {runs_as} (User=); a task's user is given by name",
            {},
        )
    commands: list[str] = []
    for line in service.values("Service", "ExecStart"):
        if not line:
            commands = []  # an empty ExecStart= resets the list
            continue
        command = line.lstrip("-@:+!")
        if "%" in command.replace("%%", ""):
            return f"ExecStart={line}: systemd specifiers (%...) have no runyard form", {}
        try:
            words = shlex.split(command.replace("%%", "%"))
        except ValueError as error:
            return f"ExecStart={line}: {error}", {}
        commands.append(shlex.join(words))
    if not commands:
        return "no ExecStart=", {}
    keys: dict[str, object] = {"run": "\n".join(commands)}
    if other_user:
        keys["user"] = runs_as  # the daemon (root) drops to them, as systemd does
    working_dir = service.last("Service", "WorkingDirectory")
    if working_dir:
        working_dir = working_dir.lstrip("-")
        keys["working_dir"] = home if working_dir == "~" else working_dir
    keys["env_base"] = "clean"
    env = {"PATH": SYSTEMD_PATH}
    for line in service.values("Service", "Environment"):
        for assignment in shlex.split(line):
            name, _, value = assignment.partition("=")
            env[name] = value
    keys["env"] = dict(sorted(env.items()))
    env_files = service.values("Service", "EnvironmentFile")
    if len(env_files) > 1:
        return "more than one EnvironmentFile=; runyard takes one env_file", {}
    if env_files:
        keys["env_file"] = env_files[0].lstrip("-")
    return None, keys


def _seconds(value: str) -> int | None:
    text = value.strip().replace(" ", "")
    if text.isdigit():
        return int(text)
    try:
        units = text.replace("msec", "ms").replace("sec", "s").replace("min", "m")
        return int(parse_duration(units).total_seconds())
    except ValueError:
        return None


def _name(stem: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9._-]+", "-", stem).strip("-.")[:100]
    return cleaned or "timer"
