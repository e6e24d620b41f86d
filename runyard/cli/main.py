"""The `runyard` command: `serve` and `validate` work on the config; the rest talk to the daemon."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TextIO

import typer

from runyard.cli import follow, importing, keys, service
from runyard.cli.client import CliError, DaemonClient, DaemonProblem
from runyard.cli.failures import error_line, print_config_error, reported_errors
from runyard.cli.options import GlobalOptions, JsonOption
from runyard.cli.render import (
    JsonLinesPrinter,
    LogPrinter,
    make_console,
    next_run,
    print_json,
    run_details,
    run_summary,
    runs_table,
    tasks_table,
)
from runyard.cli.text import Console, Text
from runyard.daemon_log import LogFormat, LogLevel, configure_logging
from runyard.domain.queries import MAX_LIMIT, SortField
from runyard.exceptions import ConfigError, RunyardError

app = typer.Typer(
    name="runyard",
    help="Run tasks on schedules or on demand, and keep every run's evidence.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(keys.app, name="keys")
app.add_typer(importing.app, name="import")
app.add_typer(service.app, name="service")

RunIdArgument = Annotated[str, typer.Argument(metavar="RUN", help="Run id")]


def main() -> None:
    """Entry point of the `runyard` console script."""
    with reported_errors():
        app(prog_name="runyard")


@app.callback()
def callback(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            metavar="PATH",
            help="Config file [default: $RUNYARD_CONFIG or ./runyard.toml]",
        ),
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Option("--data-dir", metavar="PATH", help="Data directory (database, logs, token)"),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", metavar="URL", help="Daemon base URL [default: $RUNYARD_URL, else the config]"
        ),
    ] = None,
) -> None:
    ctx.obj = GlobalOptions(config=config, data_dir=data_dir, url=url)


def _options(ctx: typer.Context) -> GlobalOptions:
    options = ctx.find_root().obj
    assert isinstance(options, GlobalOptions)
    return options


# ----- config-side commands ------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", metavar="ADDRESS", help="Address to listen on [default: [daemon] host]"
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            metavar="PORT",
            min=0,
            max=65535,
            help="Port to listen on, 0 for any free one [default: [daemon] port]",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="text, or json: one object per line")
    ] = LogFormat.TEXT,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", help="The least severe lines logged")
    ] = LogLevel.INFO,
    access_log: Annotated[
        bool,
        typer.Option("--access-log", help="Log every HTTP request [default: [daemon] access_log]"),
    ] = False,
) -> None:
    """Run the daemon: runs and the HTTP API, until SIGINT or SIGTERM."""
    try:
        config = _options(ctx).load_config()
    except ConfigError as error:
        print_config_error(error)
        raise typer.Exit(2) from None
    _print_warnings(config.path, config.warnings)
    # Imported here: the engine, the store and the web stack are only needed to serve.
    from runyard.api.server import run_daemon

    configure_logging(log_level, log_format)
    try:
        run_daemon(
            config,
            data_dir_override=_options(ctx).data_dir,
            host=host,
            port=port,
            access_log=access_log,
        )
    except (RunyardError, OSError) as error:
        typer.echo(f"runyard: cannot start: {error}", err=True)
        raise typer.Exit(1) from None


@app.command()
def schema() -> None:
    """Print the JSON Schema of runyard.toml, for editors to complete and check keys."""
    from runyard.config.schema import config_schema

    print_json(config_schema())


@app.command()
def validate(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check the config file and report every problem in it."""
    options = _options(ctx)
    try:
        config = options.load_config()
    except ConfigError as error:
        if not as_json:
            print_config_error(error)
            raise typer.Exit(1) from None
        print_json({"path": error.path, "valid": False, "errors": error.problems, "warnings": []})
        raise typer.Exit(1) from None
    if as_json:
        print_json(
            {
                "path": str(config.path),
                "valid": True,
                "errors": [],
                "warnings": list(config.warnings),
                "tasks": list(config.tasks),
                "services": list(config.services),
            }
        )
        return
    _print_warnings(config.path, config.warnings)
    count = len(config.tasks)
    summary = f"{count} task{'' if count == 1 else 's'}"
    if config.services:
        services = len(config.services)
        summary += f", {services} service{'' if services == 1 else 's'}"
    make_console().print(f"{config.path}: OK ({summary})")


def _print_warnings(path: object, warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        sys.stderr.write(f"{path}: warning: {warning}\n")


# ----- daemon commands ------------------------------------------------------------


@app.command()
def tasks(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the configured tasks with their running and queued runs."""
    with _options(ctx).client() as client:
        body = client.get("/api/tasks")
    if as_json:
        print_json(body)
        return
    found = body.get("tasks") or []
    console = make_console()
    if not found:
        console.print("no tasks configured")
        return
    console.print(tasks_table(found, datetime.now(UTC)))


TaskArgument = Annotated[str, typer.Argument(metavar="TASK", help="Task name")]


@app.command()
def pause(ctx: typer.Context, task: TaskArgument, as_json: JsonOption = False) -> None:
    """Pause a task's schedule (kept across restarts); manual runs still work."""
    with _options(ctx).client() as client:
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


@app.command()
def resume(ctx: typer.Context, task: TaskArgument, as_json: JsonOption = False) -> None:
    """Resume a task's schedule from now on; ticks inside the pause do not run."""
    with _options(ctx).client() as client:
        _status, body = client.request("POST", f"{follow.task_path(task)}/resume")
    if as_json:
        print_json(body)
        return
    name = body.get("name", task)
    if body.get("cron"):
        message = f"resumed {name}; next run at {next_run(body, datetime.now(UTC)).plain}"
    else:
        message = f"resumed {name} (it has no schedule)"
    make_console().print(message)


@app.command()
def reload(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Make the daemon re-read its config; an invalid file changes nothing."""
    with _options(ctx).client() as client:
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


@app.command("run")
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
    with _options(ctx).client() as client:
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


@app.command()
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
    with _options(ctx).client() as client:
        body = client.get(path, query)
    if as_json:
        print_json(body)
        return
    found = body.get("runs") or []
    total = body.get("total", len(found))
    console = make_console()
    if found:
        console.print(runs_table(found, datetime.now(UTC)))
    footer = f"showing {len(found)} of {total}" + (f" (offset {offset})" if offset else "")
    console.print(Text(footer, style="dim"))


@app.command()
def show(ctx: typer.Context, run_id: RunIdArgument, as_json: JsonOption = False) -> None:
    """Show every field of a run, and what happened to it."""
    with _options(ctx).client() as client:
        run = client.get(follow.run_path(run_id))
    if as_json:
        print_json(run)
        return
    console = make_console()
    console.print(run_details(run, datetime.now(UTC)))
    description = str(run.get("description") or "").strip()
    if description:
        console.print()
        console.print(Text(description))


@app.command()
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
    with _options(ctx).client() as client:
        if follow_log:
            try:
                follow.follow_log(client, run_id, printer, deadline=None)
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
        elif raw:
            follow.print_raw_log(client, run_id, sys.stdout.buffer)
        else:
            follow.print_log_pages(client, run_id, printer)


@app.command()
def stop(ctx: typer.Context, run_id: RunIdArgument, as_json: JsonOption = False) -> None:
    """Stop a run: a running one gets its stop signal, a queued one never starts."""
    with _options(ctx).client() as client:
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


# ----- inside a run ---------------------------------------------------------------

_NO_OUTPUT_DIR = (
    "$RUNYARD_OUTPUT_DIR is not set: `runyard output` works inside a run started by runyard"
)


class RowFormat(StrEnum):
    CSV = "csv"
    TSV = "tsv"  # tab-separated, no quoting: a cell holds no tab or newline
    JSONL = "jsonl"  # one JSON array of cells per line


@app.command("output")
def output_rows(
    token: Annotated[
        str, typer.Argument(metavar="TOKEN", help="Output name: the run's data under TOKEN")
    ],
    row_format: Annotated[
        RowFormat, typer.Option("--format", help="How stdin is written")
    ] = RowFormat.CSV,
) -> None:
    """Append the rows read from stdin to the current run's output TOKEN."""
    # Imported here: only a script inside a run needs them.
    from runyard import output
    from runyard.domain.output_data import TOKEN_RULE, is_valid_token

    # Checked before stdin is read: a mistake should fail at once, not after
    # the input (or, typed at a terminal, never) ends.
    if not is_valid_token(token):
        raise CliError(f"invalid output token {token!r}: use {TOKEN_RULE}", exit_code=2)
    try:
        output.output_dir()
    except output.OutputNotAvailable:
        raise CliError(_NO_OUTPUT_DIR, exit_code=2) from None
    stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    output.append_rows(token, read_rows(stream, row_format))


def read_rows(stream: TextIO, row_format: RowFormat) -> list[list[str]]:
    """Return the rows of `stream`, blank lines left out; a malformed one is a usage error."""
    try:
        if row_format is RowFormat.CSV:
            return _csv_rows(csv.reader(stream))
        if row_format is RowFormat.TSV:
            lines = (line.rstrip("\r\n") for line in stream)
            return [line.split("\t") for line in lines if line]
        return [_jsonl_row(number, line) for number, line in enumerate(stream, 1) if line.strip()]
    except UnicodeDecodeError:
        raise CliError("stdin is not UTF-8 text", exit_code=2) from None


def _csv_rows(reader: Iterable[list[str]]) -> list[list[str]]:
    try:
        return [row for row in reader if row]
    except csv.Error as error:
        raise CliError(f"stdin is not valid CSV: {error}", exit_code=2) from None


def _jsonl_row(number: int, line: str) -> list[str]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise CliError(f"stdin line {number}: invalid JSON: {error.msg}", exit_code=2) from None
    if not isinstance(row, list) or any(isinstance(cell, list | dict) for cell in row):
        raise CliError(
            f'stdin line {number}: expected an array of cells like ["a", "b"]', exit_code=2
        )
    return [_cell(value) for value in row]


def _cell(value: object) -> str:
    # As for input data: numbers and booleans become text, null the empty string.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
