"""What the CLI prints: tables of tasks and runs, run details, log lines, times."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from runyard.cli.text import Console, Table, Text

_REASON_STYLES = {
    "success": "green",
    "stopped": "yellow",
    "skipped": "yellow",
    "queue_full": "yellow",
    "missed": "yellow",
    "daemon_stopped": "yellow",
}
_FAILURE_STYLE = "red"
_STATUS_STYLES = {"pending": "cyan", "running": "blue"}
_LOG_STREAM_STYLES = {"err": "red", "sys": "dim"}

# Shown first by `show`, in this order; any other field follows.
_DETAIL_FIELDS = (
    "id",
    "task_name",
    "status",
    "end_reason",
    "exit_code",
    "triggered_by",
    "created_at",
    "start_at",
    "end_at",
    "duration_ms",
    "replica_index",
    "retry_attempt",
    "retry_of_run_id",
    "external_execution_id",
    "params",
)
# Shown under another name: the text view says the duration in words, once.
_DETAIL_LABELS = {"duration_ms": "duration"}
_ALWAYS_SHOWN = {"end_reason", "start_at", "end_at", "duration_ms"}
_HIDDEN_FIELDS = {"$schema", "description"}


def make_console(stderr: bool = False) -> Console:
    return Console(stderr=stderr)


def print_json(data: object) -> None:
    """Print `data` as plain JSON (no colours, no wrapping) for other programs."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# ----- values ---------------------------------------------------------------------


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def when(value: object, now: datetime) -> str:
    """Return a timestamp with its date, local time and zone, and how far it is from now.

    `2026-11-24 15:14:51 CET (2 min ago)`; "-" when there is none.
    """
    at = parse_time(value)
    if at is None:
        return "-"
    local = at.astimezone()
    zone = local.tzname() or local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {zone} ({relative(at, now)})"


def relative(at: datetime, now: datetime) -> str:
    """Return how far `at` is from `now` in words: `in 3 h`, `2 min ago`, `now`."""
    seconds = (at - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    span = _span(abs(seconds))
    return f"in {span}" if seconds > 0 else f"{span} ago"


def _span(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 10:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if hours < 48:
        return f"{hours} h"
    return f"{hours // 24} d"


def format_duration(milliseconds: int | float | None) -> str:
    if milliseconds is None:
        return "-"
    ms = int(milliseconds)
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def run_duration(run: Mapping[str, Any], now: datetime) -> str:
    """Return the run's duration; a running run shows its time so far."""
    if run.get("duration_ms") is not None:
        return format_duration(run["duration_ms"])
    started = parse_time(run.get("start_at"))
    if run.get("status") == "running" and started is not None:
        return format_duration((now - started).total_seconds() * 1000) + "…"
    return "-"


def styled_status(run: Mapping[str, Any]) -> Text:
    status = str(run.get("status", ""))
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def styled_reason(reason: object) -> Text:
    if not reason:
        return Text("-")
    text = str(reason)
    return Text(text, style=_REASON_STYLES.get(text, _FAILURE_STYLE))


def run_summary(run: Mapping[str, Any]) -> str:
    """Return one line saying where a run stands."""
    head = f"run {run.get('id')} of {run.get('task_name')}"
    if run.get("status") != "ended":
        return f"{head}: {run.get('status')}"
    duration = format_duration(run.get("duration_ms"))
    return (
        f"{head}: ended {run.get('end_reason')} (exit code {run.get('exit_code')}) after {duration}"
    )


# ----- tables ---------------------------------------------------------------------


def next_run(task: Mapping[str, Any], now: datetime) -> Text:
    """Return when a task's schedule fires next: a local time, "paused", or "-"."""
    if not task.get("cron"):
        return Text("-")
    if task.get("paused"):
        return Text("paused", style="yellow")
    return Text(when(task.get("next_run_at"), now))


def tasks_table(tasks: Sequence[Mapping[str, Any]], now: datetime) -> Table:
    table = Table()
    table.add_column("NAME")
    table.add_column("AUTOMATION")
    table.add_column("SCHEDULE")
    table.add_column("NEXT RUN")
    table.add_column("ACTIVE", right=True)
    table.add_column("QUEUED", right=True)
    table.add_column("DESCRIPTION", shrinks=True)
    for task in tasks:
        name = str(task.get("name", ""))
        automation = str(task.get("automation") or "")
        table.add_row(
            Text(name),
            Text(automation if automation != name else "", style="dim"),
            Text(str(task.get("cron") or "-")),
            next_run(task, now),
            str(task.get("active_runs", 0)),
            str(task.get("queued_runs", 0)),
            Text(str(task.get("description") or "").strip()),
        )
    return table


def runs_table(runs: Sequence[Mapping[str, Any]], now: datetime) -> Table:
    table = Table()
    table.add_column("ID")
    table.add_column("TASK")
    table.add_column("STATUS")
    table.add_column("END REASON")
    table.add_column("EXIT", right=True)
    table.add_column("CREATED")
    table.add_column("DURATION", right=True)
    for run in runs:
        ended = run.get("status") == "ended"
        table.add_row(
            Text(str(run.get("id", ""))),
            Text(str(run.get("task_name", ""))),
            styled_status(run),
            styled_reason(run.get("end_reason")),
            str(run.get("exit_code")) if ended else "-",
            when(run.get("created_at"), now),
            run_duration(run, now),
        )
    return table


def run_details(run: Mapping[str, Any], now: datetime) -> Table:
    """Return every field of a run as a two-column grid."""
    grid = Table(headers=False)
    grid.add_column()
    grid.add_column(shrinks=True)
    # The daemon leaves out empty fields; `show` lists the main ones anyway, as "-".
    names = [name for name in _DETAIL_FIELDS if name in run or name in _ALWAYS_SHOWN]
    names += [name for name in run if name not in _DETAIL_FIELDS and name not in _HIDDEN_FIELDS]
    for name in names:
        grid.add_row(Text(_DETAIL_LABELS.get(name, name), "bold"), _detail_value(name, run, now))
    return grid


def _detail_value(name: str, run: Mapping[str, Any], now: datetime) -> Text:
    value = run.get(name)
    if name == "status":
        return styled_status(run)
    if name == "end_reason":
        return styled_reason(value)
    if name.endswith("_at"):
        return Text(when(value, now))
    if name == "duration_ms":
        return Text(run_duration(run, now))
    if value is None or value == "":
        return Text("-")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, ensure_ascii=False))
    return Text(str(value))


# ----- logs -----------------------------------------------------------------------


class LogPrinter:
    """Print log lines: the text exactly as logged, stderr in red on a terminal only."""

    def __init__(self, out: TextIO, styled: bool) -> None:
        self.out = out
        self.styled = styled

    def line(self, line: Mapping[str, Any]) -> None:
        style = _LOG_STREAM_STYLES.get(str(line.get("stream")), "")
        self.out.write(Text(str(line.get("text", "")), style).styled(self.styled) + "\n")

    def flush(self) -> None:
        self.out.flush()


class JsonLinesPrinter(LogPrinter):
    """Print log lines as JSON Lines, one `{"n", "at", "stream", "text"}` object each."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out, styled=False)

    def line(self, line: Mapping[str, Any]) -> None:
        fields = {name: line.get(name) for name in ("n", "at", "stream", "text")}
        self.out.write(json.dumps(fields, ensure_ascii=False) + "\n")
