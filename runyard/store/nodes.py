"""The node registry: daemons sharing one PostgreSQL, their leases, and taking over dead ones.

Every lease is stamped with the database server's `now()`, never a node's
own clock: nodes whose clocks disagree still agree on who has expired. A
node is dead once `lease_renewed_at + lease_seconds` is past (its own lease
length, as it registered it).

Taking over a dead node happens in one transaction that holds the dead
node's row lock (`FOR UPDATE SKIP LOCKED`) and deletes the row before it
commits: a second survivor looking at the same moment skips the locked row,
and one looking later finds no row. So exactly one node ends a dead node's
runs. The dead node itself, restarting, re-registers with an upsert that
waits on that row lock; after it, its lease is fresh and nobody takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.domain.models import Run, RunStatus
from runyard.exceptions import NodeNameTaken
from runyard.store._rows import SUMMARY_COLUMNS, row_to_run, run_to_row
from runyard.store._upsert import conflict_insert
from runyard.store.runs import RunStore, apply_updates, insert_rows
from runyard.store.schema import nodes, runs

_ACTIVE = (RunStatus.PENDING.value, RunStatus.RUNNING.value)


def _seconds(seconds: sa.ColumnElement[float]) -> sa.ColumnElement[object]:
    """Return a PostgreSQL interval of `seconds` (make_interval's last argument)."""
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)


_LEASE_END = nodes.c.lease_renewed_at + _seconds(nodes.c.lease_seconds)


@dataclass(frozen=True)
class NodeIdentity:
    """What a node registers: who it is, where it answers, what it runs."""

    name: str
    instance: str  # a new random id at each daemon start
    url: str
    lease_seconds: float
    config_hash: str
    version: str


@dataclass(frozen=True)
class NodeInfo:
    """One registered node as `GET /api/cluster` shows it."""

    name: str
    url: str
    started_at: datetime
    lease_age: float | None  # seconds since the last renewal, by the database's clock
    lease_seconds: float | None  # None: no lease (SQLite, one daemon)
    expired: bool
    running_runs: int
    config_hash: str
    version: str


@dataclass(frozen=True)
class DeadNode:
    """A node whose lease expired, as the survivor that takes it over sees it."""

    name: str
    lease_renewed_at: datetime
    now: datetime  # the database's clock when it was taken


@dataclass(frozen=True)
class TakeOverPlan:
    """What a survivor stores for a dead node's runs: ended runs, retries, runs it queues."""

    updates: list[Run]
    inserts: list[Run]
    adopted: list[Run]  # pending runs that become the survivor's


class NodeRegistry:
    """The `nodes` table and the runs' `node` column, for one node (PostgreSQL only)."""

    def __init__(self, store: RunStore, identity: NodeIdentity) -> None:
        self._store = store
        self.identity = identity

    @property
    def name(self) -> str:
        return self.identity.name

    def register(self) -> None:
        """Enter this node in the registry with a fresh lease.

        NodeNameTaken if a live node with another URL holds the name; the same
        name and URL is this node restarted (after a crash its lease may not
        have expired yet), and takes the row over.
        """
        me = self.identity
        with self._store.transaction(write=True) as connection:
            row = connection.execute(
                sa.select(nodes.c.url, (sa.func.now() > _LEASE_END).label("expired"))
                .where(nodes.c.name == me.name)
                .with_for_update()
            ).first()
            if row is not None and not row.expired and row.url != me.url:
                raise NodeNameTaken(
                    f"node name {me.name!r} is held by a live node at {row.url}; "
                    "give this daemon another [daemon] node_name"
                )
            values = {
                "instance": me.instance,
                "url": me.url,
                "started_at": sa.func.now(),
                "lease_renewed_at": sa.func.now(),
                "lease_seconds": me.lease_seconds,
                "config_hash": me.config_hash,
                "version": me.version,
            }
            statement = conflict_insert(connection, nodes).values(name=me.name, **values)
            connection.execute(
                statement.on_conflict_do_update(index_elements=[nodes.c.name], set_=values)
            )
        # From now on the store writes run changes only while this lease is held.
        self._store.fence = (me.name, me.instance)

    def renew(self) -> bool:
        """Renew this node's lease; False if its row is gone (another node took it over)."""
        me = self.identity
        with self._store.transaction(write=True) as connection:
            renewed = connection.execute(
                sa.update(nodes)
                .where(nodes.c.name == me.name, nodes.c.instance == me.instance)
                .values(lease_renewed_at=sa.func.now(), config_hash=me.config_hash)
                .returning(nodes.c.name)
            ).first()
        return renewed is not None

    def release(self) -> None:
        """Let the lease lapse now (a clean stop): survivors take this node's pending runs."""
        me = self.identity
        with self._store.transaction(write=True) as connection:
            connection.execute(
                sa.update(nodes)
                .where(nodes.c.name == me.name, nodes.c.instance == me.instance)
                .values(lease_renewed_at=sa.func.now() - _seconds(nodes.c.lease_seconds))
            )

    def own_active_runs(self) -> list[Run]:
        """Return this node's pending and running runs, oldest first, adopting unowned ones.

        Runs stored before there were nodes (node NULL) go to the first node
        that asks: one UPDATE, so two nodes starting together never share them.
        """
        with self._store.transaction(write=True) as connection:
            connection.execute(
                sa.update(runs)
                .where(runs.c.node.is_(None), runs.c.status.in_(_ACTIVE))
                .values(node=self.name)
            )
            return _active_runs(connection, self.name)

    def take_over(
        self, plan: Callable[[DeadNode, Sequence[Run]], TakeOverPlan]
    ) -> tuple[DeadNode, TakeOverPlan] | None:
        """Take over one dead node, if any: store `plan` of its active runs, drop its row.

        `plan` is pure (it runs inside the transaction that holds the dead
        node's row lock). Return the node and what was stored, or None when
        no node is dead (or the dead ones are being taken by others now).
        """
        with self._store.transaction(write=True) as connection:
            row = connection.execute(
                sa.select(nodes.c.name, nodes.c.lease_renewed_at, sa.func.now().label("now"))
                .where(nodes.c.name != self.name, sa.func.now() > _LEASE_END)
                .order_by(nodes.c.name)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            dead = DeadNode(row.name, row.lease_renewed_at, row.now)
            leftovers = _active_runs(connection, dead.name, lock=True)
            stored = plan(dead, leftovers)
            if stored.updates:
                apply_updates(connection, stored.updates)
            if stored.inserts:
                insert_rows(connection, [run_to_row(run) for run in stored.inserts])
            if stored.adopted:
                connection.execute(
                    sa.update(runs)
                    .where(runs.c.id.in_([run.id for run in stored.adopted]))
                    .values(node=self.name)
                )
            connection.execute(sa.delete(nodes).where(nodes.c.name == dead.name))
        return dead, stored

    def list_nodes(self) -> list[NodeInfo]:
        """Return every registered node by name, with its lease age and running runs."""
        running = (
            sa.select(runs.c.node, sa.func.count().label("running"))
            .where(runs.c.status == RunStatus.RUNNING.value)
            .group_by(runs.c.node)
            .subquery()
        )
        statement = (
            sa.select(
                nodes,
                sa.func.extract("epoch", sa.func.now() - nodes.c.lease_renewed_at).label("age"),
                (sa.func.now() > _LEASE_END).label("expired"),
                sa.func.coalesce(running.c.running, 0).label("running"),
            )
            .select_from(nodes.outerjoin(running, running.c.node == nodes.c.name))
            .order_by(nodes.c.name)
        )
        with self._store.transaction() as connection:
            rows = connection.execute(statement).mappings().all()
        return [
            NodeInfo(
                name=row["name"],
                url=row["url"],
                started_at=row["started_at"],
                lease_age=max(float(row["age"]), 0.0),
                lease_seconds=float(row["lease_seconds"]),
                expired=bool(row["expired"]),
                running_runs=int(row["running"]),
                config_hash=row["config_hash"],
                version=row["version"],
            )
            for row in rows
        ]


def _active_runs(connection: Connection, node: str, *, lock: bool = False) -> list[Run]:
    statement = (
        sa.select(*SUMMARY_COLUMNS, runs.c.input_data)
        .where(runs.c.node == node, runs.c.status.in_(_ACTIVE))
        .order_by(runs.c.created_at, runs.c.id)
    )
    if lock:
        statement = statement.with_for_update()
    return [row_to_run(row) for row in connection.execute(statement).mappings()]
