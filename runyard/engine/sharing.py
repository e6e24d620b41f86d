"""Several nodes share one queue: a node with free slots takes runs that wait on other nodes.

A run waits in the queue of the node that admitted it. When that node is
full (its `max_concurrent_runs`), or its run waits behind an older one
queued elsewhere, nodes with free slots take it: once a second, a node with
room makes itself the owner of the oldest runs that have waited a second or
more and whose task (and v3 account) has room under its limit cluster-wide
(store/claims.py, `adopt_pending`), then claims and starts them like its
own. The node that had them finds them gone when it tries to claim them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from runyard.domain.models import Run
from runyard.exceptions import StoreError
from runyard.store.claims import StartLimits

log = logging.getLogger("runyard.engine.node")

# How often a node with free slots looks for runs waiting elsewhere, and how
# long a run must have waited (past its not_before) before another node takes it.
SHARE_SECONDS = 1.0
WAITED_SECONDS = 1.0


class QueueSharing:
    """Take runs waiting on other nodes while this one has free slots."""

    def __init__(
        self,
        *,
        room: Callable[[], int],
        limits: Callable[[], StartLimits],
        adopt: Callable[[int, StartLimits, float], list[Run]],
        take: Callable[[list[Run]], None],
    ) -> None:
        self._room = room
        self._limits = limits
        self._adopt = adopt
        self._take = take
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._share_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _share_forever(self) -> None:
        while True:
            await asyncio.sleep(SHARE_SECONDS)
            try:
                await self.share_once()
            except StoreError as error:
                log.warning("could not look for runs waiting on other nodes: %s", error)

    async def share_once(self) -> int:
        """Take what fits now; return how many runs were taken."""
        room = self._room()
        if room <= 0:
            return 0
        taken = await asyncio.to_thread(self._adopt, room, self._limits(), WAITED_SECONDS)
        if taken:
            log.info(
                "took %d run(s) waiting on other nodes", len(taken), extra={"runs": len(taken)}
            )
            self._take(taken)
        return len(taken)
