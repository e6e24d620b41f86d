"""The daemon's log: Python `logging` to one stream, as text or JSON lines.

Every logger under `runyard.` (and uvicorn's) ends up here. Lines that repeat
word for word (a client retrying the same mistake, a flood of the same
warning) are let through a few at a time, so no client can fill the disk
through the log. Structured fields passed as `extra={...}` (run_id, task, ...)
become keys of a JSON line; in text they are already part of the message.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO


class LogFormat(StrEnum):
    TEXT = "text"  # `<time> <LEVEL> <logger>: <message>`
    JSON = "json"  # one object per line, for journald, Loki and the like


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# Identical lines: at most REPEAT_BURST in any REPEAT_WINDOW seconds; the next
# one let through after a pause says how many were left out.
REPEAT_BURST = 5
REPEAT_WINDOW = 10.0
_REPEAT_KEYS_MAX = 2048  # distinct lines remembered before expired ones are forgotten

# uvicorn's own loggers, routed to the same stream.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
# The attributes every LogRecord has: anything else was passed as `extra`.
_RECORD_ATTRIBUTES = frozenset(
    [*logging.makeLogRecord({}).__dict__, "message", "asctime", "color_message"]
)


class _Clock:
    """UTC timestamps like `2026-11-24T09:14:06.304Z`; the part up to the second made once."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self._second = second
        return f"{self._prefix}{int((created - second) * 1000):03d}Z"


_timestamp = _Clock()


def _message(record: logging.LogRecord) -> str:
    # RepeatFilter has made it already, for every line that reaches a formatter.
    message = getattr(record, "message", None)
    return message if isinstance(message, str) else record.getMessage()


class TextFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> <logger>: <message>`, then the traceback if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record.created)} {record.levelname} {record.name}: {_message(record)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Repeats:
    __slots__ = ("started", "count", "left_out")

    def __init__(self, started: float) -> None:
        self.started = started
        self.count = 1
        self.left_out = 0


class RepeatFilter(logging.Filter):
    """Let at most `burst` identical lines through in any `window` seconds.

    "Identical" means the same logger, level and final message. The first line
    let through after lines were left out says how many.
    """

    def __init__(
        self,
        burst: int = REPEAT_BURST,
        window: float = REPEAT_WINDOW,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._burst = burst
        self._window = window
        self._monotonic = monotonic
        self._seen: dict[tuple[str, int, str], _Repeats] = {}
        # Records come from the event loop, the store's writer thread and worker threads.
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.message = record.getMessage()
        if hasattr(record, "run_id"):
            return True  # a line naming a run is never the same line twice: nothing to track
        key = (record.name, record.levelno, message)
        now = self._monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or now - seen.started >= self._window:
                left_out = 0 if seen is None else seen.left_out
                if len(self._seen) >= _REPEAT_KEYS_MAX:
                    self._forget_expired(now)
                self._seen[key] = _Repeats(now)
                if left_out:
                    # The message is final here: freeze it with the count appended.
                    record.msg = f"{message} (the same line {left_out} more times, left out)"
                    record.args = None
                    record.message = record.msg
                return True
            seen.count += 1
            if seen.count <= self._burst:
                return True
            seen.left_out += 1
            return False

    def _forget_expired(self, now: float) -> None:
        self._seen = {
            key: seen
            for key, seen in self._seen.items()
            if now - seen.started < self._window or seen.left_out
        }
        if len(self._seen) >= _REPEAT_KEYS_MAX:
            self._seen.clear()


def configure_logging(
    level: LogLevel = LogLevel.INFO,
    log_format: LogFormat = LogFormat.TEXT,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record at `level` and above to `stream` (stderr) in `log_format`."""
    # No line shows the thread, the process or the source line: not gathering
    # them halves the cost of a record (the logging HOWTO's "Optimization"),
    # which matters for the line per run start and end.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.JSON else TextFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.value.upper())
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    # Alembic narrates every start ("Context impl SQLiteImpl."): only at debug.
    logging.getLogger("alembic").setLevel(
        logging.DEBUG if level is LogLevel.DEBUG else logging.WARNING
    )
    return handler
