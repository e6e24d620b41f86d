"""`cluster`: the daemons sharing the database, asked of one of them over HTTP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import typer

from runyard.cli.options import JsonOption, options_of
from runyard.cli.render import make_console, print_json
from runyard.cli.text import Table, Text
from runyard.domain.cluster import config_norm


def cluster(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the nodes on the daemon's database: lease age, running runs, config hash."""
    with options_of(ctx).client() as client:
        body = client.get("/api/cluster")
    if as_json:
        print_json(body)
        return
    console = make_console()
    console.print(nodes_table(body.get("nodes") or [], str(body.get("node", ""))))
    if body.get("config_mismatch"):
        console.print(
            Text("the nodes do not all run the same config (CONFIG differs)", style="yellow")
        )


def nodes_table(nodes: Sequence[Mapping[str, Any]], answering: str) -> Table:
    table = Table()
    table.add_column("NODE")
    table.add_column("URL", shrinks=True)
    table.add_column("LEASE")
    table.add_column("RUNNING", right=True)
    table.add_column("CONFIG")
    # The hash most nodes share (the answering node's on a tie) is the norm.
    norm = config_norm(
        {str(node.get("name", "")): str(node.get("config_hash", "")) for node in nodes}, answering
    )
    for node in nodes:
        name = str(node.get("name", ""))
        config = str(node.get("config_hash", ""))
        table.add_row(
            Text(name + (" *" if name == answering else "")),
            str(node.get("url", "")),
            _lease(node),
            str(node.get("running_runs", 0)),
            Text(config, style="" if config == norm else "yellow"),
        )
    return table


def _lease(node: Mapping[str, Any]) -> Text:
    age = node.get("lease_age_seconds")
    if age is None:
        return Text("-", style="dim")  # SQLite: one daemon, no lease
    if node.get("expired"):
        return Text(f"expired ({float(age):.0f}s)", style="red")
    return Text(f"{float(age):.1f}s ago", style="green")
