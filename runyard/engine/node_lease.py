"""A node's lease on a shared PostgreSQL: register, renew, and take over nodes that died.

Every daemon whose database is PostgreSQL is a node (store/nodes.py holds
the SQL). It registers before the engine recovers its own runs, renews its
lease every `renew_every` seconds, and after each renewal takes over any node
whose lease expired: that node's running runs end `crashed` (naming it) and
are retried here per their task's policy; its pending runs are queued here.
Exactly one survivor takes each dead node (the registry's row lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from runyard.clock import Clock, utc_now
from runyard.domain.models import Run
from runyard.engine.core import Engine
from runyard.engine.recovery import plan_takeover
from runyard.exceptions import StoreError
from runyard.store.nodes import DeadNode, NodeRegistry, TakeOverPlan

log = logging.getLogger("runyard.engine.node")

# The default lease and how often it is renewed: three renewals per lease,
# so one slow renewal (a busy database) never lets a live node expire.
DEFAULT_LEASE_SECONDS = 15.0
RENEWALS_PER_LEASE = 3
# A node that has not renewed for this share of its lease (two renewals
# missed) fences itself: it kills its runs with a third of the lease (5 s by
# default) left before another node may take them over (engine/fencing.py).
FENCE_AFTER_SHARE = 2 / 3
# How often the watchdog looks at the time since the last renewal.
WATCH_SECONDS = 0.25


class NodeLease:
    """Keep this node's lease alive and take over the nodes whose lease expired."""

    def __init__(self, registry: NodeRegistry, engine: Engine, clock: Clock = utc_now) -> None:
        self.registry = registry
        self._engine = engine
        self._clock = clock
        self.renew_every = registry.identity.lease_seconds / RENEWALS_PER_LEASE
        self.fence_after = registry.identity.lease_seconds * FENCE_AFTER_SHARE
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        # time.monotonic() of the first renewal since the database last failed
        # this node (or since registration); None while renewals fail.
        self._renewing_since: float | None = time.monotonic()
        # time.monotonic() when the last renewal that landed was sent: the
        # database stamped the lease later than this, never earlier.
        self._renewed_at = time.monotonic()

    async def register(self) -> None:
        """Enter the registry with a fresh lease (before the engine recovers its runs)."""
        sent = time.monotonic()
        await asyncio.to_thread(self.registry.register)
        self._renewed_at = sent
        log.info(
            "node %s registered (lease %gs, renewed every %gs)",
            self.registry.name,
            self.registry.identity.lease_seconds,
            self.renew_every,
            extra={"node": self.registry.name},
        )

    def start(self) -> None:
        """Begin renewing (and looking for dead nodes) in the background, and the watchdog."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._renew_forever())
        self._watchdog = loop.create_task(self._watch_forever())

    async def stop(self) -> None:
        """Stop renewing and let the lease lapse, so survivors take the pending runs now."""
        for task in (self._task, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await asyncio.to_thread(self.registry.release)
        except StoreError as error:
            log.warning("node %s: could not release its lease: %s", self.registry.name, error)

    async def _renew_forever(self) -> None:
        while True:
            try:
                await self.renew_and_sweep()
            except StoreError as error:
                self._renewing_since = None
                log.warning("node %s: lease renewal failed: %s", self.registry.name, error)
            except Exception:
                log.exception("node %s: lease step failed", self.registry.name)
            await asyncio.sleep(self.renew_every)

    async def _watch_forever(self) -> None:
        # Apart from the renewals: a renewal can hang on a cut-off network.
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            self.check_fence()

    def check_fence(self) -> bool:
        """Fence this node if it went too long without renewing; return whether it is fenced."""
        fencing = self._engine.fencing
        silent = time.monotonic() - self._renewed_at
        if not fencing.fenced and silent >= self.fence_after:
            lease = self.registry.identity.lease_seconds
            fencing.fence(f"no lease renewal for {silent:.1f}s of its {lease:g}s lease")
        return fencing.fenced

    async def renew_and_sweep(self) -> list[str]:
        """Renew the lease (lifting a fence), then take over every dead node; return those taken."""
        sent = time.monotonic()
        fencing = self._engine.fencing
        if not await asyncio.to_thread(self.registry.renew):
            # Another node found this one expired and took its runs over (a
            # cut-off or a stall longer than the lease): whatever still runs
            # here is killed, what was left to write is dropped, and the node
            # registers again.
            log.error(
                "node %s: its lease had expired and another node took its runs over; "
                "registering again",
                self.registry.name,
            )
            fencing.fence("another node took its lease over")
            await fencing.settle()
            await self.register()
            await fencing.lift(taken_over=True, tasks=self._engine.tasks)
        else:
            self._renewed_at = sent
            if fencing.fenced:
                await fencing.settle()
                await fencing.lift(taken_over=False, tasks=self._engine.tasks)
        now = time.monotonic()
        if self._renewing_since is None:
            self._renewing_since = now
        if now - self._renewing_since < self.registry.identity.lease_seconds:
            # After the database was away (or at start), every live node needs
            # a lease's time to renew again before an old lease means death:
            # else the first node back would take over the others.
            return []
        taken: list[str] = []
        while True:
            result = await asyncio.to_thread(self.registry.take_over, self._plan)
            if result is None:
                return taken
            dead, stored = result
            taken.append(dead.name)
            log.warning(
                "node %s took over dead node %s (lease last renewed %s): "
                "%d run(s) ended, %d retried, %d queued here",
                self.registry.name,
                dead.name,
                dead.lease_renewed_at.isoformat(),
                len(stored.updates),
                len(stored.inserts),
                len(stored.adopted),
                extra={"node": self.registry.name, "dead_node": dead.name},
            )
            self._engine.take_in(stored.updates, sorted_pending(stored))

    def _plan(self, dead: DeadNode, leftovers: Sequence[Run]) -> TakeOverPlan:
        plan = plan_takeover(
            leftovers,
            dead.name,
            dead.lease_renewed_at,
            self.registry.name,
            self._engine.tasks,
            self._clock(),
        )
        return TakeOverPlan(plan.updates, plan.inserts, plan.adopted)


def sorted_pending(stored: TakeOverPlan) -> list[Run]:
    """The runs to queue from a take-over, oldest first."""
    return sorted([*stored.adopted, *stored.inserts], key=lambda run: (run.created_at, run.id))
