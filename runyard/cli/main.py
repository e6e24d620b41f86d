"""The `runyard` command: `serve` and `validate` work on the config; the rest talk to the daemon.

This module assembles the command from its groups: `cli/serve.py` (config side),
`cli/daemon_commands.py` (tasks and reload), `cli/runs.py` (runs), `cli/services.py`
(services, and `stop` of a run or a service), `cli/cluster.py` (the nodes),
`cli/output_command.py` (inside a run), and the sub-commands `keys`, `import` and
`service`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runyard.cli import (
    cluster,
    daemon_commands,
    importing,
    keys,
    output_command,
    runs,
    serve,
    service,
    services,
)
from runyard.cli.failures import reported_errors
from runyard.cli.options import GlobalOptions

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


# Commands in the order `runyard --help` lists them.
app.command()(serve.serve)
app.command()(serve.schema)
app.command()(serve.validate)
app.command()(daemon_commands.tasks)
app.command()(daemon_commands.pause)
app.command()(daemon_commands.resume)
app.command()(daemon_commands.reload)
app.command()(cluster.cluster)
app.command()(services.services)
app.command()(services.start)
app.command()(services.restart)
app.command("run")(runs.run_task)
app.command()(runs.runs)
app.command()(runs.show)
app.command()(runs.logs)
app.command()(services.stop)
app.command("output")(output_command.output_rows)
