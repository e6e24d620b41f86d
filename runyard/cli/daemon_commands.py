"""`tasks`, `pause`, `resume` and `reload`: tasks and config, asked of the daemon over HTTP."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from runyard.cli import follow
from runyard.cli.client import DaemonProblem
from runyard.cli.options import JsonOption, options_of
from runyard.cli.render import (
    make_console,
    next_run,
    print_json,
    tasks_table,
)
from runyard.clock import utc_now


def tasks(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the configured tasks with their running and queued runs."""
    with options_of(ctx).client() as client:
        body = client.get("/api/tasks")
    if as_json:
        print_json(body)
        return
    found = body.get("tasks") or []
    console = make_console()
    if not found:
        console.print("no tasks configured")
        return
    console.print(tasks_table(found, utc_now()))


TaskArgument = Annotated[str, typer.Argument(metavar="TASK", help="Task name")]


def pause(ctx: typer.Context, task: TaskArgument, as_json: JsonOption = False) -> None:
    """Pause a task's schedule (kept across restarts); manual runs still work."""
    with options_of(ctx).client() as client:
        _status, body = client.request("POST", f"{follow.task_path(task)}/pause")
    if as_json:
        print_json(body)
        return
    name = body.get("name", task)
    if body.get("cron"):
        message = f"paused {name} (its schedule fires no more until resumed)"
    else:
        message = f"paused {name} (it has no schedule; manual runs still work)"
    make_console().print(message)


def resume(ctx: typer.Context, task: TaskArgument, as_json: JsonOption = False) -> None:
    """Resume a task's schedule from now on; ticks inside the pause do not run."""
    with options_of(ctx).client() as client:
        _status, body = client.request("POST", f"{follow.task_path(task)}/resume")
    if as_json:
        print_json(body)
        return
    name = body.get("name", task)
    if body.get("cron"):
        message = f"resumed {name}; next run at {next_run(body, utc_now()).plain}"
    else:
        message = f"resumed {name} (it has no schedule)"
    make_console().print(message)


def reload(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Make the daemon re-read its config; an invalid file changes nothing."""
    with options_of(ctx).client() as client:
        try:
            _status, body = client.request("POST", "/api/daemon/reload")
        except DaemonProblem as problem:
            if problem.status != 422 or not isinstance(problem.body, dict):
                raise
            _print_reload_refused(problem.body)
            raise typer.Exit(1) from None
    if as_json:
        print_json(body)
        return
    for line in reload_lines(body):
        sys.stdout.write(line + "\n")
    for warning in body.get("warnings") or []:
        sys.stderr.write(f"warning: {warning}\n")


def reload_lines(body: dict[str, Any]) -> list[str]:
    """Return what `runyard reload` prints for a successful reload."""
    lines = [
        f"{label}: {', '.join(str(name) for name in body.get(key) or [])}"
        for key, label in (
            ("added", "added"),
            ("removed", "removed"),
            ("changed", "changed"),
            ("skipped_runs", "skipped queued runs"),
            ("accounts_changed", "accounts changed"),
            ("services_added", "services started"),
            ("services_removed", "services stopped"),
            ("services_changed", "services restarted"),
        )
        if body.get(key)
    ]
    lines += [f"restart required: {line}" for line in body.get("restart_required") or []]
    return lines or ["reloaded: no task changed"]


def _print_reload_refused(body: dict[str, Any]) -> None:
    detail = str(body.get("detail") or "the new config is invalid")
    lines = [f"runyard: reload refused: {detail}"]
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            where = error.get("value")
            message = str(error.get("message", ""))
            lines.append(f"{where}: {message}" if where else message)
    sys.stderr.write("".join(line + "\n" for line in lines))
    sys.stderr.flush()
