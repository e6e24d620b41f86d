"""`services`, `start`, `restart` and `stop`: the daemon's services, asked of it over HTTP.

`stop` is shared with runs: a run id (a ULID) stops that run, any other name
the service of that name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any
from urllib.parse import quote

import typer

from runyard.cli import runs
from runyard.cli.client import DEFAULT_READ_TIMEOUT
from runyard.cli.options import JsonOption, options_of
from runyard.cli.render import make_console, print_json
from runyard.cli.text import Table, Text

ServiceArgument = Annotated[str, typer.Argument(metavar="NAME", help="Service name")]
StopArgument = Annotated[
    str, typer.Argument(metavar="RUN|SERVICE", help="A run id, or a service name")
]
# A run id: 26 characters of Crockford's base32 (str(ULID())).
_RUN_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$", re.IGNORECASE)
_STATE_STYLES = {
    "healthy": "green",
    "running": "green",
    "starting": "cyan",
    "waiting": "cyan",
    "backoff": "yellow",
    "stopped": "dim",
    "unhealthy": "red",
    "fatal": "red",
}


def service_path(name: str) -> str:
    return f"/api/services/{quote(name, safe='')}"


def services(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the services, one line per instance: state, pid, restarts, health."""
    with options_of(ctx).client() as client:
        body = client.get("/api/services")
    if as_json:
        print_json(body)
        return
    found = body.get("services") or []
    console = make_console()
    if not found:
        console.print("no services configured")
        return
    console.print(services_table(found))


def services_table(found: Sequence[Mapping[str, Any]]) -> Table:
    table = Table()
    table.add_column("NAME")
    table.add_column("INSTANCE", right=True)
    table.add_column("STATE")
    table.add_column("PID", right=True)
    table.add_column("RESTARTS", right=True)
    table.add_column("HEALTH", shrinks=True)
    for service in found:
        for instance in service.get("instances") or []:
            state = str(instance.get("state", ""))
            table.add_row(
                Text(str(service.get("name", ""))),
                str(instance.get("index", "")),
                Text(state, style=_STATE_STYLES.get(state, "")),
                str(instance.get("pid") or "-"),
                str(instance.get("restarts", 0)),
                _health(service, instance),
            )
    return table


def _health(service: Mapping[str, Any], instance: Mapping[str, Any]) -> Text:
    """The last probe's message; else why the instance is in its state; else `-`."""
    if not (service.get("definition") or {}).get("health_check"):
        reason = str(instance.get("reason") or "")
        return Text(reason or "-", style="dim")
    ok = instance.get("health_ok")
    message = str(instance.get("health") or "")
    if ok is None:
        return Text(message or "not probed yet", style="dim")
    return Text(message, style="green" if ok else "red")


def start(ctx: typer.Context, name: ServiceArgument, as_json: JsonOption = False) -> None:
    """Start a service's instances that are not up (a fatal one too); returns at once."""
    _act(ctx, name, "start", "starting", as_json)


def restart(ctx: typer.Context, name: ServiceArgument, as_json: JsonOption = False) -> None:
    """Stop a service's instances, then start them again."""
    _act(ctx, name, "restart", "restarted", as_json)


def stop(ctx: typer.Context, target: StopArgument, as_json: JsonOption = False) -> None:
    """Stop a run (by id) or a service (by name).

    A running run gets its stop signal, a queued one never starts; a service's
    instances get their stop signal, and this returns once they have exited.
    """
    if _RUN_ID.fullmatch(target):
        runs.stop(ctx, target, as_json)
        return
    _act(ctx, target, "stop", "stopped", as_json)


def _act(ctx: typer.Context, name: str, action: str, done: str, as_json: bool) -> None:
    with options_of(ctx).client() as client:
        read_timeout = None
        if action != "start":
            # The answer comes once the instances have exited: SIGKILL follows
            # graceful_stop, so that long and a margin.
            definition = client.get(service_path(name)).get("definition") or {}
            read_timeout = float(definition.get("graceful_stop") or 0) + DEFAULT_READ_TIMEOUT
        _status, body = client.request(
            "POST", f"{service_path(name)}/{action}", read_timeout=read_timeout
        )
    if as_json:
        print_json(body)
        return
    instances = body.get("instances") or []
    states = ", ".join(
        f"{instance.get('index')}: {instance.get('state')}" for instance in instances
    )
    make_console().print(f"{done} {body.get('name', name)} ({states})")
