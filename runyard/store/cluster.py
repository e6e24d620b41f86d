"""What nodes read of each other to answer for runs another node holds (PostgreSQL only).

The cluster secret nodes present to each other, where a node answers (its
registered URL) and whether its lease still holds, and which tasks are
paused, re-read by every node's scheduler so that a pause on one node holds
on all of them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from runyard.store._upsert import conflict_insert
from runyard.store.runs import RunStore
from runyard.store.schema import cluster_secret, nodes, task_state

SECRET_BYTES = 32  # 256 random bits


def _lease_end() -> sa.ColumnElement[object]:
    return nodes.c.lease_renewed_at + sa.func.make_interval(0, 0, 0, 0, 0, 0, nodes.c.lease_seconds)


@dataclass(frozen=True)
class NodeAddress:
    """Where a registered node answers; whether its lease holds (by the server's clock)."""

    name: str
    url: str
    expired: bool
    lease_age: float  # seconds since its last renewal


class ClusterStore:
    """The reads (and the one write) that let nodes answer for each other."""

    def __init__(self, store: RunStore) -> None:
        self._store = store

    def secret(self) -> str:
        """Return the cluster secret, writing a new one if no node did yet.

        INSERT ... ON CONFLICT DO NOTHING, then read: two nodes starting
        together both end up with the row that was written first.
        """
        with self._store.transaction(write=True) as connection:
            connection.execute(
                conflict_insert(connection, cluster_secret)
                .values(id=1, secret=secrets.token_urlsafe(SECRET_BYTES), created_at=sa.func.now())
                .on_conflict_do_nothing(index_elements=[cluster_secret.c.id])
            )
            stored: str = connection.execute(
                sa.select(cluster_secret.c.secret).where(cluster_secret.c.id == 1)
            ).scalar_one()
        return stored

    def node_address(self, name: str) -> NodeAddress | None:
        """Return where the node `name` answers; None when no such node is registered."""
        statement = sa.select(
            nodes.c.name,
            nodes.c.url,
            (sa.func.now() > _lease_end()).label("expired"),
            sa.func.extract("epoch", sa.func.now() - nodes.c.lease_renewed_at).label("age"),
        ).where(nodes.c.name == name)
        with self._store.transaction() as connection:
            row = connection.execute(statement).first()
        if row is None:
            return None
        return NodeAddress(
            name=row.name, url=row.url, expired=bool(row.expired), lease_age=max(float(row.age), 0)
        )

    def paused_tasks(self) -> set[str]:
        """Return the names of the tasks whose schedule is paused (on every node)."""
        with self._store.transaction() as connection:
            rows = connection.execute(sa.select(task_state.c.task_name).where(task_state.c.paused))
            return {row.task_name for row in rows}
