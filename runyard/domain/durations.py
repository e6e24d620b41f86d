"""Parse the human units the config uses: durations (`1h30m`) and sizes (`10mb`)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|s|m|h|d)")
_DURATION_UNITS = {
    "us": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
}


def parse_duration(text: str) -> timedelta:
    """Return the duration written as `90s`, `1h30m`, `500ms` or `2d`.

    Raise ValueError with a sentence a user can act on when it is malformed.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty duration; write it like 90s, 5m or 1h30m")
    if value.startswith("-"):
        raise ValueError(f"duration {text!r} is negative")
    position = 0
    total = timedelta(0)
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(value) or position == 0:
        raise ValueError(
            f"invalid duration {text!r}; write it like 90s, 5m or 1h30m (units: ms, s, m, h, d)"
        )
    return total


def parse_size(text: str) -> int:
    """Return the byte count written as `10mb`, `512kb`, `1gb` or a plain number.

    Units are binary: 1kb = 1024 bytes.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid size {text!r}; write it like 512kb, 10mb or 1gb")
    unit = (match.group(2) or "b").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def format_duration(value: timedelta) -> str:
    """Return `value` in the config's own notation (`1h30m`, `90s`, `250ms`)."""
    total_ms = round(value / timedelta(milliseconds=1))
    if total_ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if total_ms:
        parts.append(f"{total_ms}ms")
    return "".join(parts)
