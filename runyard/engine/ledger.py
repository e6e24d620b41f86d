"""Who holds a slot: the counts admission decides on, kept in one place.

A run holds a slot from the moment the engine takes it off its queue until
its process is gone (`occupy` / `vacate`). A trigger being admitted holds
its place before its insert commits (`reserve`): a start slot or a place in
the queue, given back when the commit is answered, whatever the answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from runyard.domain.models import Run, TaskDefinition
from runyard.domain.policies import Load
from runyard.engine.queues import Lane, RunQueues


class Ledger:
    """Running runs and the reservations of triggers being admitted, per task, account, lane."""

    def __init__(
        self,
        queues: RunQueues,
        *,
        max_concurrent_runs: int,
        account_limits: Mapping[str, int | None] | None = None,
    ) -> None:
        self.max_concurrent_runs = max_concurrent_runs
        # v3 account id -> its max_concurrent_runs (None: no account limit).
        self.account_limits: dict[str, int | None] = dict(account_limits or {})
        self._queues = queues
        self.running = 0
        self._running_per_task: dict[str, int] = defaultdict(int)
        self._running_per_account: dict[str | None, int] = defaultdict(int)
        # Admitted triggers whose insert is not committed yet still hold their place.
        self._starting = 0
        self._starting_per_task: dict[str, int] = defaultdict(int)
        self._starting_per_account: dict[str | None, int] = defaultdict(int)
        self._queueing_per_task: dict[str, int] = defaultdict(int)
        self._queueing_per_lane: dict[Lane, int] = defaultdict(int)

    def set_limits(
        self, max_concurrent_runs: int, account_limits: Mapping[str, int | None]
    ) -> None:
        self.max_concurrent_runs = max_concurrent_runs
        self.account_limits = dict(account_limits)

    def account_limit(self, account: str | None) -> int | None:
        return None if account is None else self.account_limits.get(account)

    def running_of_task(self, task_name: str) -> int:
        return self._running_per_task.get(task_name, 0)

    def running_of_account(self, account: str | None) -> int:
        return self._running_per_account.get(account, 0)

    def load(self, task_name: str, account: str | None) -> Load:
        """What admission sees for one more trigger of `task_name` by `account`."""
        lane: Lane = (task_name, account)
        return Load(
            self._running_per_task[task_name] + self._starting_per_task[task_name],
            self._queues.queued(task_name) + self._queueing_per_task[task_name],
            self.running + self._starting,
            self.max_concurrent_runs,
            account_running=(
                self._running_per_account[account] + self._starting_per_account[account]
            ),
            account_limit=self.account_limit(account),
            lane_queued=self._queues.lane_length(lane) + self._queueing_per_lane[lane],
        )

    def has_free_slot(self) -> bool:
        """Whether a queued run may take a slot: one neither running nor held by a trigger."""
        return self.running + self._starting < self.max_concurrent_runs

    def may_start(self, task: TaskDefinition | None, account: str | None) -> bool:
        """Whether a queued run of `task` (effective limits) by `account` may start now."""
        if task is None or self._running_per_task[task.name] >= task.max_concurrent:
            return False
        limit = self.account_limit(account)
        return limit is None or self._running_per_account[account] < limit

    def occupy(self, run: Run) -> None:
        """Count a run that takes its slot (leaves its queue to start)."""
        self.running += 1
        self._running_per_task[run.task_name] += 1
        self._running_per_account[run.account] += 1

    def vacate(self, run: Run) -> None:
        """Give back the slot of a run whose process is gone (once per `occupy`)."""
        self.running -= 1
        self._running_per_task[run.task_name] -= 1
        self._running_per_account[run.account] -= 1

    @contextmanager
    def reserve(self, task_name: str, account: str | None) -> Iterator[Reservation]:
        """Hold the places of one trigger's runs until the block ends, however it ends."""
        reservation = Reservation(self, task_name, account)
        try:
            yield reservation
        finally:
            reservation.release()


class Reservation:
    """The start slots and queue places one trigger holds while its insert commits."""

    def __init__(self, ledger: Ledger, task_name: str, account: str | None) -> None:
        self._ledger = ledger
        self._task_name = task_name
        self._account = account
        self.starts = 0
        self.queued = 0

    def start(self) -> None:
        """Hold a start slot for one run."""
        ledger = self._ledger
        ledger._starting += 1
        ledger._starting_per_task[self._task_name] += 1
        ledger._starting_per_account[self._account] += 1
        self.starts += 1

    def queue(self) -> None:
        """Hold a place in the queue (the task's and the lane's) for one run."""
        ledger = self._ledger
        ledger._queueing_per_task[self._task_name] += 1
        ledger._queueing_per_lane[(self._task_name, self._account)] += 1
        self.queued += 1

    def release(self) -> None:
        """Give back everything held (a second call gives back nothing)."""
        ledger = self._ledger
        ledger._starting -= self.starts
        ledger._starting_per_task[self._task_name] -= self.starts
        ledger._starting_per_account[self._account] -= self.starts
        ledger._queueing_per_task[self._task_name] -= self.queued
        ledger._queueing_per_lane[(self._task_name, self._account)] -= self.queued
        self.starts = self.queued = 0
