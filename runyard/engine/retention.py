"""Retention: deleting ended runs beyond a task's keep_runs or older than its keep_for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from runyard.domain.models import TaskDefinition
from runyard.domain.policies import retention_cutoff
from runyard.store.runs import RunStore

log = logging.getLogger("runyard.engine")


async def apply_retention(
    store: RunStore,
    tasks: Iterable[TaskDefinition],
    now: datetime,
    delete_files: Callable[[str], None],
) -> int:
    """Delete the expired runs of `tasks` (rows, then files); return how many."""
    deleted = 0
    for task in tasks:
        if task.keep_runs is None and task.keep_for is None:
            continue
        ids = await asyncio.to_thread(
            store.delete_expired, task.name, task.keep_runs, retention_cutoff(now, task.keep_for)
        )
        for run_id in ids:
            await asyncio.to_thread(delete_files, run_id)
        deleted += len(ids)
    return deleted


async def retention_forever(interval: float, sweep: Callable[[], Awaitable[int]]) -> None:
    """Sweep every `interval` seconds until cancelled; a failed sweep is logged, not fatal."""
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep()
        except Exception:
            log.exception("retention sweep failed")
