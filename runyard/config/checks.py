"""Value checks shared by the config sections, each reporting `<key path>: <problem>`.

Every check takes the raw TOML value, its key path and a Problems collector; it
returns the parsed value, or None after recording why the value was refused.
TOML has no null, so None never stands for a valid value.
"""

from __future__ import annotations

import difflib
import json
import math
import pwd
import re
import signal
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import date, time, timedelta
from enum import StrEnum
from typing import TypeVar

# Re-exported: the section checks resolve relative paths with it.
from runyard.config.locate import absolute_path as absolute_path
from runyard.domain.durations import parse_duration, parse_size

E = TypeVar("E", bound=StrEnum)

# A check bound to its limits, as stored in the per-section key tables.
Check = Callable[[object, str, "Problems"], object]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MAX_SHOWN = 60


class Problems:
    """Collect the errors and warnings found while reading one config file."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def __len__(self) -> int:
        return len(self.errors)

    def add(self, path: str, message: str) -> None:
        """Record an error at `path`."""
        self.errors.append(f"{path}: {message}")

    def warn(self, path: str, message: str) -> None:
        """Record a warning at `path`; warnings never make the config invalid."""
        self.warnings.append(f"{path}: {message}")


def key_path(parent: str, key: str) -> str:
    """Return `parent.key`, quoting `key` the way TOML would need it quoted."""
    # TOML basic strings accept JSON's escapes, so json.dumps quotes correctly.
    part = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{parent}.{part}" if parent else part


def quote(text: str) -> str:
    """Return `text` double-quoted, shortened when it is long."""
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return json.dumps(text, ensure_ascii=False)


def describe(value: object) -> str:
    """Name the TOML type of `value` together with the value, for type errors."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, date | time):
        return f"date/time {value.isoformat()}"
    return type(value).__name__


def shown(value: object) -> str:
    """Show a value of the expected kind bare (`"wait"`, `100`), anything else typed."""
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return describe(value)


def check_keys(
    table: Mapping[str, object],
    path: str,
    allowed: Collection[str],
    problems: Problems,
    refused: Mapping[str, str] | None = None,
) -> None:
    """Report every key of `table` outside `allowed`, suggesting a near miss."""
    for key in table:
        if key in allowed:
            continue
        if refused and key in refused:
            problems.add(key_path(path, key), refused[key])
            continue
        close = difflib.get_close_matches(key, sorted(allowed), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.add(key_path(path, key), f"unknown key{hint}")


def check_table(value: object, path: str, problems: Problems) -> dict[str, object] | None:
    """Return `value` when it is a TOML table."""
    if isinstance(value, dict):
        return value
    problems.add(path, f"expected a table, got {describe(value)}")
    return None


def check_str(
    value: object,
    path: str,
    problems: Problems,
    *,
    non_empty: bool = False,
    max_length: int | None = None,
) -> str | None:
    """Return `value` when it is a string within the length limits."""
    if not isinstance(value, str):
        problems.add(path, f"expected a string, got {describe(value)}")
        return None
    if non_empty and not value.strip():
        problems.add(path, "must not be empty")
        return None
    if max_length is not None and len(value) > max_length:
        problems.add(path, f"must be at most {max_length} characters, got {len(value)}")
        return None
    return value


def check_bool(value: object, path: str, problems: Problems) -> bool | None:
    """Return `value` when it is true or false."""
    if isinstance(value, bool):
        return value
    problems.add(path, f"expected true or false, got {describe(value)}")
    return None


def check_int(
    value: object,
    path: str,
    problems: Problems,
    low: int | None = None,
    high: int | None = None,
) -> int | None:
    """Return `value` when it is an integer (never a boolean) within [low, high]."""
    # bool is a subclass of int, yet `port = true` is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(path, f"expected an integer, got {describe(value)}")
        return None
    if not _in_range(value, path, problems, low, high):
        return None
    return value


def _in_range(value: int, path: str, problems: Problems, low: int | None, high: int | None) -> bool:
    if low is not None and high is not None and not low <= value <= high:
        problems.add(path, f"must be between {low} and {high}, got {value}")
        return False
    if low is not None and value < low:
        problems.add(path, f"must be at least {low}, got {value}")
        return False
    if high is not None and value > high:
        problems.add(path, f"must be at most {high}, got {value}")
        return False
    return True


def check_choice(
    value: object, path: str, problems: Problems, choices: Sequence[str]
) -> str | None:
    """Return `value` when it is one of `choices`."""
    if isinstance(value, str) and value in choices:
        return value
    problems.add(path, f"must be one of {', '.join(choices)}, got {shown(value)}")
    return None


def check_enum(value: object, path: str, problems: Problems, enum: type[E]) -> E | None:
    """Return the member of `enum` whose value is `value`."""
    choice = check_choice(value, path, problems, [member.value for member in enum])
    return None if choice is None else enum(choice)


def check_duration(
    value: object, path: str, problems: Problems, *, positive: bool = False
) -> timedelta | None:
    """Return the duration written as `"90s"`/`"1h30m"` or as a number of seconds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.add(
            path,
            f'expected a duration like "90s" or "1h30m" (or a number of seconds), '
            f"got {describe(value)}",
        )
        return None
    try:
        if isinstance(value, str):
            result = parse_duration(value)
        elif not math.isfinite(value) or value < 0:
            problems.add(path, f"must be a positive number of seconds, got {value}")
            return None
        else:
            result = timedelta(seconds=value)
    except ValueError as exc:
        problems.add(path, str(exc))
        return None
    except OverflowError:
        problems.add(path, f"duration {shown(value)} is too long")
        return None
    if positive and result <= timedelta(0):
        problems.add(path, f"must be greater than 0, got {shown(value)}")
        return None
    return result


def check_size(value: object, path: str, problems: Problems, minimum: int) -> int | None:
    """Return the byte count written as `"100mb"` or as a number of bytes."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        problems.add(
            path, f'expected a size like "100mb" or a number of bytes, got {describe(value)}'
        )
        return None
    try:
        result = parse_size(value) if isinstance(value, str) else value
    except ValueError as exc:
        problems.add(path, str(exc))
        return None
    except OverflowError:
        problems.add(path, f"size {shown(value)} is too large")
        return None
    if result < minimum:
        problems.add(path, f"must be at least {_format_size(minimum)}, got {shown(value)}")
        return None
    return result


def _format_size(size: int) -> str:
    for unit, factor in (("gb", 1024**3), ("mb", 1024**2), ("kb", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


def check_umask(value: object, path: str, problems: Problems) -> int | None:
    """Return the file mode creation mask written as `"027"`/`"0027"` (octal digits)."""
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value.strip()):
        problems.add(path, f'expected octal digits like "022" or "0027", got {describe(value)}')
        return None
    return int(value.strip(), 8)


def check_user(value: object, path: str, problems: Problems) -> str | None:
    """Return the name of a user of this machine (a task's processes run as them)."""
    name = check_str(value, path, problems, non_empty=True)
    if name is None:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        problems.add(path, f"no user {quote(name)} on this machine")
        return None
    return name


def check_signal(value: object, path: str, problems: Problems) -> str | None:
    """Return the canonical `SIG...` name of the signal written as `"TERM"` or `"SIGTERM"`."""
    if not isinstance(value, str):
        problems.add(path, f"expected a signal name like SIGTERM, got {describe(value)}")
        return None
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name in signal.Signals.__members__:
        # Aliases (SIGIOT) map to the canonical name (SIGABRT) the engine looks up.
        return signal.Signals[name].name
    problems.add(
        path,
        f"must be a signal name such as SIGTERM, SIGINT, SIGHUP or SIGKILL, got {quote(value)}",
    )
    return None
