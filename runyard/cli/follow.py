"""Waiting for runs and reading their logs: paged, raw, or live over SSE."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from runyard.cli.client import STREAM_READ_TIMEOUT, CliError, DaemonClient, StreamInterrupted
from runyard.cli.render import LogPrinter, parse_time

LOG_PAGE_SIZE = 1000
RETRY_SEARCH_PAGE = 100
MAX_WAIT_TIMEOUT = 3600  # the trigger endpoint's upper bound for wait_timeout
_POLL_INTERVALS = (0.2, 0.5, 1.0, 2.0)
# Reconnects in a row that bring no new event before the CLI gives up on a stream.
_MAX_FRUITLESS_RECONNECTS = 3

Run = dict[str, Any]


def run_path(run_id: str) -> str:
    return f"/api/runs/{quote(run_id, safe='')}"


def task_path(task_name: str) -> str:
    return f"/api/tasks/{quote(task_name, safe='')}"


def remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def trigger(
    client: DaemonClient,
    task_name: str,
    params: dict[str, str],
    wait: bool,
    deadline: float | None,
) -> Run:
    """Trigger a run; with `wait`, let the daemon hold the answer until the run ends."""
    query: dict[str, Any] = {}
    read_timeout = None
    if wait:
        left = remaining(deadline)
        wait_timeout = MAX_WAIT_TIMEOUT if left is None else max(1, min(MAX_WAIT_TIMEOUT, left))
        query = {"wait": True, "wait_timeout": round(wait_timeout, 3)}
        read_timeout = wait_timeout + 30
    _status, run = client.request(
        "POST",
        f"{task_path(task_name)}/run",
        params=query,
        body={"params": params},
        read_timeout=read_timeout,
    )
    if not isinstance(run, dict) or "id" not in run:
        raise CliError("the daemon answered the trigger without a run")
    return run


def wait_for_end(client: DaemonClient, run: Run, deadline: float | None) -> Run | None:
    """Return the run once it has ended, or None when the deadline passes first."""
    attempt = 0
    while run.get("status") != "ended":
        left = remaining(deadline)
        if left is not None and left <= 0:
            return None
        pause = _POLL_INTERVALS[min(attempt, len(_POLL_INTERVALS) - 1)]
        time.sleep(pause if left is None else min(pause, left))
        attempt += 1
        run = client.get(run_path(str(run["id"])))
    return run


def next_attempt(client: DaemonClient, ended: Run) -> Run | None:
    """Return the retry the daemon created when `ended` ended, or None if it was the last attempt.

    The daemon records a retry in the same transaction as the end of the run
    it retries, so once a run reads as ended its retry, if any, exists. It is
    among the task's runs created since that end: walk them newest first and
    stop at the first created before it.
    """
    if ended.get("end_reason") == "success":
        return None
    ended_at = parse_time(ended.get("end_at"))
    path = f"{task_path(str(ended.get('task_name')))}/runs"
    offset = 0
    while True:
        query = {"limit": RETRY_SEARCH_PAGE, "offset": offset, "sort_field": "created_at"}
        page = client.get(path, {**query, "sort_direction": "desc"})
        runs = page.get("runs") or []
        for run in runs:
            if run.get("retry_of_run_id") == ended.get("id"):
                return dict(run)
        oldest = parse_time(runs[-1].get("created_at")) if runs else None
        if oldest is None or ended_at is None or oldest < ended_at:
            return None
        offset += len(runs)


def follow_log(
    client: DaemonClient, run_id: str, printer: LogPrinter, deadline: float | None
) -> Run | None:
    """Print the run's log live until it ends; return the ended run (None at the deadline).

    A dropped stream is resumed with Last-Event-ID; lines already printed are
    skipped by number, so a resume never prints a line twice.
    """
    printed = -1
    fruitless = 0
    path = f"{run_path(run_id)}/log/stream"
    while True:
        left = remaining(deadline)
        if left is not None and left <= 0:
            return None
        read_timeout = STREAM_READ_TIMEOUT if left is None else min(STREAM_READ_TIMEOUT, left)
        last_id = str(printed) if printed >= 0 else None
        progressed = False
        try:
            for event in client.events(path, last_event_id=last_id, read_timeout=read_timeout):
                data = _event_data(event.data)
                if event.event == "line" and isinstance(data, dict):
                    number = int(data.get("n", printed + 1))
                    if number > printed:
                        printer.line(data)
                        printer.flush()
                        printed = number
                        progressed = True
                elif event.event == "done" and isinstance(data, dict):
                    return data
        except StreamInterrupted:
            fruitless = 0 if progressed else fruitless + 1
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if fruitless > _MAX_FRUITLESS_RECONNECTS:
                raise


def print_log_pages(client: DaemonClient, run_id: str, printer: LogPrinter) -> None:
    """Print the whole log page by page, so no answer is unbounded."""
    start = 0
    while True:
        page = client.get(f"{run_path(run_id)}/log", {"from": start, "limit": LOG_PAGE_SIZE})
        lines = page.get("lines") or []
        for line in lines:
            printer.line(line)
        next_start = int(page.get("next", start + len(lines)))
        if not lines or next_start <= start or next_start >= int(page.get("total_lines", 0)):
            break
        start = next_start
    printer.flush()


def print_raw_log(client: DaemonClient, run_id: str, out: Any) -> None:
    """Copy the raw log to `out` (a binary stream) as it arrives."""
    for chunk in client.raw_chunks(f"{run_path(run_id)}/log/raw"):
        out.write(chunk)
    out.flush()


def _event_data(data: str) -> object:
    try:
        return json.loads(data)
    except ValueError:
        return None
