"""A node that cannot renew its lease stops its runs before another node may take them over.

Several nodes share a PostgreSQL (engine/node_lease.py). When one cannot
renew its lease (cut off from the database, or stalled), the others end its
running runs as crashed once the lease expired, and retry them. For no run
to be running twice, the node *fences* itself well before that: it kills
every run it is running (SIGKILL to each run's process groups), forgets its
queue and starts nothing more; triggers asked of it are refused (NodeFenced,
answered 503), so callers go to another node.

What it had still to write about those runs cannot overwrite what a node
that took it over recorded: each of its writes first takes a share lock on
its own registry row and stores nothing if the row is gone (store/runs.py,
LeaseLost).

Once it renews again, the fence is lifted in one of two ways:

- its lease was still its own (nobody took it over): it ends the runs it
  killed as `crashed`, saying why, retries them per their task's policy,
  and queues its pending runs again from the database;
- another node took it over (its row was gone): that node recorded and
  retried its runs and queued its pending ones; this node drops what it had
  still to write about them, registers again, and starts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime

from runyard.domain.models import Run, RunKind, RunStatus, TaskDefinition
from runyard.engine.events import EventHub
from runyard.engine.executor import Executor
from runyard.engine.queues import RunQueues
from runyard.engine.recovery import plan_recovery
from runyard.engine.runner import Runner
from runyard.engine.runs import event_data
from runyard.engine.writer import StoreWriter
from runyard.exceptions import LeaseLost, NodeFenced, StoreError

log = logging.getLogger("runyard.engine.node")


class Fencing:
    """Fence this node (kill its runs, start nothing) and lift the fence once it renews."""

    def __init__(
        self,
        *,
        node: str,
        runner: Runner,
        queues: RunQueues,
        executor: Executor,
        writer: StoreWriter,
        events: EventHub,
        own_runs: Callable[[], list[Run]],
        clock: Callable[[], datetime],
    ) -> None:
        self._node = node
        self._runner = runner
        self._queues = queues
        self._executor = executor
        self._writer = writer
        self._events = events
        self._own_runs = own_runs
        self._clock = clock
        self.reason: str | None = None  # why this node is fenced; None: it is not

    @property
    def fenced(self) -> bool:
        return self.reason is not None

    def refusal(self) -> NodeFenced:
        """The error a trigger asked of a fenced node gets."""
        return NodeFenced(
            f"node {self._node!r} cannot renew its lease ({self.reason}) and starts no runs "
            "until it can; ask another node"
        )

    def fence(self, reason: str) -> list[str]:
        """Kill every run of this node now and start nothing more; return the runs killed."""
        if self.fenced:
            return []
        self.reason = reason
        runner = self._runner
        runner.accepting = False
        runner.fenced = True
        # Pending in the database: queued again when the fence is lifted, or
        # by the node that takes this one over.
        self._queues.clear()
        killed: list[str] = []
        for active in runner.active.values():
            if active.run.kind is not RunKind.TASK:
                continue
            active.fenced = True
            self._executor.kill_now(active)
            killed.append(active.run.id)
        if killed:
            # Processes the runs started in process groups of their own: not on
            # the default executor, whose threads may all wait on the database.
            threading.Thread(
                target=self._executor.strays.table.kill_runs,
                args=(killed,),
                name="runyard-fence",
                daemon=True,
            ).start()
        log.error(
            "node %s fenced: %s; killed %d run(s), starting none until its lease is renewed",
            self._node,
            reason,
            len(killed),
            extra={"node": self._node, "killed_runs": len(killed)},
        )
        return killed

    async def settle(self) -> None:
        """Wait until every run has ended here and every change queued before has been tried.

        After this, nothing written from before the fence can land later.
        """
        if self._runner.executions:
            await asyncio.wait(set(self._runner.executions))
        # An empty change commits after everything queued before it.
        with contextlib.suppress(StoreError):
            await self._writer.write()

    async def lift(self, *, taken_over: bool, tasks: Mapping[str, TaskDefinition]) -> None:
        """Record the runs the fence killed (unless another node did) and start again."""
        runner = self._runner
        killed, runner.fenced_runs = runner.fenced_runs, []
        if killed and not taken_over:
            try:
                taken_over = not await self._record_killed(killed, tasks)
            except StoreError:
                runner.fenced_runs = killed  # tried again at the next renewal
                raise
        own = await asyncio.to_thread(self._own_runs)
        # What triggers admitted while the fence went up is in `own` as well.
        self._queues.clear()
        self.reason = None
        runner.fenced = False
        runner.accepting = True
        for run in own:
            if run.status is RunStatus.PENDING:
                runner.schedule(run)
        runner.pump()
        log.warning(
            "node %s: fence lifted (%s); %d pending run(s) queued again",
            self._node,
            "another node had taken its runs over" if taken_over else "its lease was its own",
            sum(run.status is RunStatus.PENDING for run in own),
            extra={"node": self._node},
        )

    async def _record_killed(self, killed: list[Run], tasks: Mapping[str, TaskDefinition]) -> bool:
        """End the killed runs crashed and retry them; False if another node had taken them."""
        note = (
            f"Node {self._node!r} could not renew its lease ({self.reason}): it killed the run "
            "so that no other node would run it at the same time."
        )
        plan = plan_recovery(
            killed, {run.id for run in killed}, {}, tasks, self._clock(), note=note
        )
        for crashed_run, retry in plan.retried:
            plan.replace_retry(retry, await self._runner.link_retry_input(crashed_run, retry))
        try:
            await self._writer.write(inserts=plan.inserts, updates=plan.updates)
        except LeaseLost:
            return False
        for ended in plan.updates:
            self._runner.announce_end(ended)
        for retry in plan.inserts:
            self._events.publish("run.created", event_data(retry))
        return True
