"""Nodes sharing one database: which of them run a config unlike the others.

Pure: the CLI (`runyard cluster`) and the dashboard (the daemon page) flag
the same nodes from the same data as `GET /api/cluster`.
"""

from __future__ import annotations

from collections.abc import Mapping


def config_norm(hashes: Mapping[str, str], answering: str) -> str:
    """Return the config hash most nodes share; on a tie, the answering node's.

    `hashes` maps each node's name to its config hash, in listing order; a
    tie the answering node is not part of goes to the first hash listed.
    Empty when there are no nodes.
    """
    values = list(hashes.values())
    return max(
        values,
        key=lambda value: (
            values.count(value),
            hashes.get(answering) == value,
        ),
        default="",
    )


def odd_nodes(hashes: Mapping[str, str], answering: str) -> list[str]:
    """Return the names of the nodes whose config hash is not the norm, in listing order.

    Non-empty exactly when the nodes do not all run the same config.
    """
    norm = config_norm(hashes, answering)
    return [name for name, value in hashes.items() if value != norm]
