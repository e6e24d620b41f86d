"""`run`, `runs`, `show`, `logs` and `stop`: runs, asked of the daemon over HTTP."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from runyard.cli import follow
from runyard.cli.client import CliError, DaemonClient
from runyard.cli.failures import error_line
from runyard.cli.options import JsonOption, options_of
from runyard.cli.render import (
    JsonLinesPrinter,
    LogPrinter,
    make_console,
    print_json,
    run_details,
    run_summary,
    runs_table,
)
from runyard.cli.text import Console, Text
from runyard.clock import utc_now
from runyard.domain.queries import MAX_LIMIT, SortField

RunIdArgument = Annotated[str, typer.Argument(metavar="RUN", help="Run id")]


def run_task(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(metavar="TASK", help="Task name")],
    param: Annotated[
        list[str] | None,
        typer.Option("-p", "--param", metavar="KEY=VALUE", help="A param value; repeatable"),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to end, retries included")
    ] = False,
    follow_log: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Print the log live (each retry's too), then wait for the end"
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(min=0.1, metavar="SECONDS", help="Give up waiting after this long"),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help='Print {"runs": [...]}: the run, and with --wait each retry, last last'
        ),
    ] = False,
) -> None:
    """Trigger a run. With --wait or --follow, exit 0 only if its last attempt succeeds."""
    if as_json and follow_log:
        raise CliError("--json and --follow both write to stdout: use --wait --json", exit_code=2)
    params = parse_params(param or [])
    waiting = wait or follow_log or timeout is not None
    deadline = time.monotonic() + timeout if timeout is not None else None
    errors = make_console(stderr=True)
    with options_of(ctx).client() as client:
        run = follow.trigger(client, task, params, waiting and not follow_log, deadline)
        if not as_json:
            # The id alone on stdout, so `id=$(runyard run x)` works; the rest goes to stderr.
            sys.stdout.write(f"{run['id']}\n")
            sys.stdout.flush()
        if not waiting:
            if as_json:
                print_json({"runs": [run]})
            else:
                errors.print(Text(run_summary(run)))
            return
        waited: list[dict[str, Any]] = [run]
        try:
            attempts = _attempts(client, waited, follow_log, deadline, None if as_json else errors)
        except KeyboardInterrupt:
            current = waited[-1]["id"]
            error_line(f"stopped waiting; run {current} goes on (`runyard stop {current}` ends it)")
            raise typer.Exit(130) from None
    if as_json:
        print_json({"runs": attempts})
    last = attempts[-1]
    if last.get("status") != "ended":
        raise CliError(f"run {last['id']} had not ended after {timeout:g}s; it goes on")
    raise typer.Exit(0 if last.get("end_reason") == "success" else 1)


def _attempts(
    client: DaemonClient,
    waited: list[dict[str, Any]],
    follow_log: bool,
    deadline: float | None,
    errors: Console | None,
) -> list[dict[str, Any]]:
    """Wait for the run and each retry of it in turn; return every attempt, the last last.

    `waited` starts with the triggered run; each retry is appended as it is
    waited for. The last attempt has not ended when the deadline came first.
    """
    run = waited[-1]
    attempts: list[dict[str, Any]] = []
    printer = LogPrinter(sys.stdout, styled=make_console().is_terminal) if follow_log else None
    total: int | None = None
    while True:
        if printer is not None:
            ended = follow.follow_log(client, str(run["id"]), printer, deadline)
        else:
            ended = follow.wait_for_end(client, run, deadline)
        if ended is None:
            attempts.append(run)
            return attempts
        attempts.append(ended)
        if errors is not None:
            errors.print(Text(run_summary(ended)))
        retry = follow.next_attempt(client, ended)
        if retry is None:
            return attempts
        if total is None:
            task = client.get(follow.task_path(str(ended["task_name"])))
            total = int(task.get("retry_attempts", 0)) + 1
        if errors is not None:
            errors.print(
                Text(
                    f"retrying: attempt {int(retry.get('retry_attempt', 0)) + 1} of {total} "
                    f"is run {retry['id']}, after the task's retry_delay"
                )
            )
        run = retry
        waited.append(retry)


def parse_params(values: list[str]) -> dict[str, str]:
    """Turn `-p key=value` options into the params body; a bad one is a usage error."""
    params: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise CliError(f"invalid -p {value!r}: expected KEY=VALUE", exit_code=2)
        params[key] = text
    return params


def runs(
    ctx: typer.Context,
    task: Annotated[
        str | None, typer.Argument(metavar="TASK", help="Only this task's runs")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(help="A phase (pending, running, ended) or an end reason (success, ...)"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIMIT, help="Runs per page")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Runs to skip")] = 0,
    sort: Annotated[SortField | None, typer.Option(help="Sort field [default: created_at]")] = None,
    asc: Annotated[bool, typer.Option("--asc", help="Sort ascending (default descending)")] = False,
    search: Annotated[str | None, typer.Option(help="Case-insensitive text to look for")] = None,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first."""
    path = f"{follow.task_path(task)}/runs" if task else "/api/runs"
    query = {
        "limit": limit,
        "offset": offset,
        "status": status,
        "sort_field": sort.value if sort else None,
        "sort_direction": "asc" if asc else "desc",
        "search": search,
    }
    with options_of(ctx).client() as client:
        body = client.get(path, query)
    if as_json:
        print_json(body)
        return
    found = body.get("runs") or []
    total = body.get("total", len(found))
    console = make_console()
    if found:
        console.print(runs_table(found, utc_now()))
    footer = f"showing {len(found)} of {total}" + (f" (offset {offset})" if offset else "")
    console.print(Text(footer, style="dim"))


def show(ctx: typer.Context, run_id: RunIdArgument, as_json: JsonOption = False) -> None:
    """Show every field of a run, and what happened to it."""
    with options_of(ctx).client() as client:
        run = client.get(follow.run_path(run_id))
    if as_json:
        print_json(run)
        return
    console = make_console()
    console.print(run_details(run, utc_now()))
    description = str(run.get("description") or "").strip()
    if description:
        console.print()
        console.print(Text(description))


def logs(
    ctx: typer.Context,
    run_id: RunIdArgument,
    follow_log: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends")
    ] = False,
    raw: Annotated[bool, typer.Option("--raw", help="The log file as stored, unstyled")] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object per line: n, at, stream, text"),
    ] = False,
) -> None:
    """Print a run's log; stderr lines are red on a terminal."""
    if as_json and raw:
        raise CliError("--json and --raw are two different formats: choose one", exit_code=2)
    printer: LogPrinter = (
        JsonLinesPrinter(sys.stdout)
        if as_json
        else LogPrinter(sys.stdout, styled=not raw and make_console().is_terminal)
    )
    with options_of(ctx).client() as client:
        if follow_log:
            try:
                follow.follow_log(client, run_id, printer, deadline=None)
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
        elif raw:
            follow.print_raw_log(client, run_id, sys.stdout.buffer)
        else:
            follow.print_log_pages(client, run_id, printer)


def stop(ctx: typer.Context, run_id: RunIdArgument, as_json: JsonOption = False) -> None:
    """Stop a run: a running one gets its stop signal, a queued one never starts."""
    with options_of(ctx).client() as client:
        status, run = client.request("POST", f"{follow.run_path(run_id)}/stop")
    if as_json:
        print_json(run)
        return
    task = run.get("task_name", "?")
    if status == 202:
        message = f"stopping run {run_id} of {task}: sent the stop signal; it ends once it exits"
    else:
        message = f"stopped run {run_id} of {task}: it had not started"
    make_console().print(message)
