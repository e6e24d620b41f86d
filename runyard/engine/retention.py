"""Retention: deleting ended runs beyond a task's keep_runs or older than its keep_for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from runyard.domain.models import TaskDefinition
from runyard.domain.policies import retention_cutoff
from runyard.store.runs import RunStore

log = logging.getLogger("runyard.engine")


@dataclass(frozen=True)
class KeepRule:
    """How many ended runs of one name to keep, and for how long (None: no limit)."""

    name: str
    keep_runs: int | None
    keep_for: timedelta | None = None


def keep_rules(tasks: Iterable[TaskDefinition], others: Mapping[str, int]) -> list[KeepRule]:
    """Return the tasks' rules, then `keep_runs` for names that are not tasks (services).

    A name both a task and in `others` keeps the task's rule (the config
    refuses a name shared by a task and a service, so it does not happen).
    """
    rules = [KeepRule(task.name, task.keep_runs, task.keep_for) for task in tasks]
    names = {rule.name for rule in rules}
    rules += [KeepRule(name, keep) for name, keep in sorted(others.items()) if name not in names]
    return rules


async def apply_retention(
    store: RunStore,
    rules: Iterable[KeepRule],
    now: datetime,
    delete_files: Callable[[str], None],
) -> int:
    """Delete the expired runs under `rules` (rows, then files); return how many."""
    deleted = 0
    for rule in rules:
        if rule.keep_runs is None and rule.keep_for is None:
            continue
        ids = await asyncio.to_thread(
            store.delete_expired, rule.name, rule.keep_runs, retention_cutoff(now, rule.keep_for)
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
