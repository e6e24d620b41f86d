"""`serve`, `validate` and `schema`: the commands that work on the config file, not on a daemon."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from runyard.cli.failures import print_config_error
from runyard.cli.options import JsonOption, options_of
from runyard.cli.render import (
    make_console,
    print_json,
)
from runyard.daemon_log import LogFormat, LogLevel, configure_logging
from runyard.exceptions import ConfigError, RunyardError


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
        config = options_of(ctx).load_config()
    except ConfigError as error:
        print_config_error(error)
        raise typer.Exit(2) from None
    print_warnings(config.path, config.warnings)
    # Imported here: the engine, the store and the web stack are only needed to serve.
    from runyard.api.server import run_daemon

    configure_logging(log_level, log_format)
    try:
        run_daemon(
            config,
            data_dir_override=options_of(ctx).data_dir,
            host=host,
            port=port,
            access_log=access_log,
        )
    except (RunyardError, OSError) as error:
        typer.echo(f"runyard: cannot start: {error}", err=True)
        raise typer.Exit(1) from None


def schema() -> None:
    """Print the JSON Schema of runyard.toml, for editors to complete and check keys."""
    from runyard.config.schema import config_schema

    print_json(config_schema())


def validate(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check the config file and report every problem in it."""
    options = options_of(ctx)
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
    print_warnings(config.path, config.warnings)
    count = len(config.tasks)
    summary = f"{count} task{'' if count == 1 else 's'}"
    if config.services:
        services = len(config.services)
        summary += f", {services} service{'' if services == 1 else 's'}"
    make_console().print(f"{config.path}: OK ({summary})")


def print_warnings(path: object, warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        sys.stderr.write(f"{path}: warning: {warning}\n")
