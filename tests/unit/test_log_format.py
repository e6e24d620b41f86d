"""The daemon's log: text and JSON lines, and identical lines rate-limited."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from runyard.daemon_log import (
    REPEAT_BURST,
    JsonFormatter,
    LogFormat,
    LogLevel,
    RepeatFilter,
    TextFormatter,
    configure_logging,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(
    message: str, *args: object, level: int = logging.INFO, **extra: object
) -> logging.LogRecord:
    made = logging.LogRecord("runyard.test", level, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_identical_lines_pass_a_burst_then_are_left_out_until_the_window_ends() -> None:
    clock = FakeClock()
    repeats = RepeatFilter(burst=3, window=10.0, monotonic=clock)
    passed = [repeats.filter(record("client at %s left", "10.0.0.1")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    clock.now += 10.0
    after = record("client at %s left", "10.0.0.1")
    assert repeats.filter(after)
    assert after.getMessage() == "client at 10.0.0.1 left (the same line 7 more times, left out)"


def test_lines_that_differ_are_never_held_back() -> None:
    repeats = RepeatFilter(burst=2, window=10.0, monotonic=FakeClock())
    assert all(repeats.filter(record("run %s ended", number)) for number in range(1000))


def test_the_same_text_at_another_level_or_logger_is_another_line() -> None:
    repeats = RepeatFilter(burst=1, window=10.0, monotonic=FakeClock())
    assert repeats.filter(record("same"))
    assert repeats.filter(record("same", level=logging.WARNING))
    other = record("same")
    other.name = "runyard.other"
    assert repeats.filter(other)
    assert not repeats.filter(record("same"))


def test_json_lines_carry_time_level_logger_message_and_fields() -> None:
    line = JsonFormatter().format(
        record("run %s of %s started", "01RUN", "hello", run_id="01RUN", task="hello")
    )
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "runyard.test"
    assert entry["message"] == "run 01RUN of hello started"
    assert (entry["run_id"], entry["task"]) == ("01RUN", "hello")
    assert entry["time"].endswith("Z")
    assert "\n" not in line


def test_json_lines_keep_a_traceback_in_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.LogRecord(
            "runyard.test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(made))
    assert "ValueError: boom" in entry["exception"]


def test_text_lines_are_time_level_logger_message() -> None:
    line = TextFormatter().format(record("reload: added %s", "x"))
    stamp, level, logger, message = line.split(" ", 3)
    assert stamp.endswith("Z") and "T" in stamp
    assert (level, logger, message) == ("INFO", "runyard.test:", "reload: added x")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_sends_runyard_and_uvicorn_lines_to_one_stream() -> None:
    stream = io.StringIO()
    configure_logging(LogLevel.INFO, LogFormat.JSON, stream)
    logging.getLogger("runyard.runs").info("run started", extra={"run_id": "R"})
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    logging.getLogger("runyard.runs").debug("not at info")
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["logger"], e["message"]) for e in entries] == [
        ("runyard.runs", "run started"),
        ("uvicorn.error", "Application startup complete."),
    ]
    assert entries[0]["run_id"] == "R"


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_rate_limits_repeated_lines() -> None:
    stream = io.StringIO()
    configure_logging(LogLevel.INFO, LogFormat.TEXT, stream)
    for _ in range(50):
        logging.getLogger("runyard.http").info("a client at 10.0.0.1 closed its connection")
    assert len(stream.getvalue().splitlines()) == REPEAT_BURST
