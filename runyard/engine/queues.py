"""Runs admitted and not started: FIFO lanes, and runs waiting out a retry delay.

A queue lane holds the runs of one task triggered by one v3 account (None:
REST, CLI and cron). Lanes keep a saturated account from holding back the
others; across lanes the oldest run that may start goes first.

Every run that enters here is counted in `inputs` (the bytes of input data
waiting, for `max_queued_input`) and leaves it when it leaves here, except
for the runs of a trigger being admitted: the engine counts those itself
before their insert commits, and `enqueue` then files them without counting
them again.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import datetime

from runyard.domain.models import Run
from runyard.engine.queued_input import QueuedInput
from runyard.engine.timers import CallLater, Timer, loop_call_later

Lane = tuple[str, str | None]


class RunQueues:
    """Pending runs held in memory, in their lanes or behind their `not_before` timers.

    `on_due` is called whenever a run may have become startable here (queued
    now, due after its delay, put back): the engine then starts what it can.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], datetime],
        on_due: Callable[[], None],
        call_later: CallLater = loop_call_later,
    ) -> None:
        self.lanes: dict[Lane, deque[Run]] = defaultdict(deque)
        # Every lane's head as (created_at, id, lane), oldest first, so the next
        # run to start is found without walking every lane: when 1,000 cron
        # tasks fire on one tick, each start walked all 1,000 lanes (a tenth
        # of a second of CPU per hundred starts). Entries go stale when their
        # run leaves the head by another way than next_startable; they are
        # dropped when they come up.
        self._heads: list[tuple[datetime, str, Lane]] = []
        self.inputs = QueuedInput()
        self._queued_per_task: dict[str, int] = defaultdict(int)
        self._delayed: dict[str, tuple[Run, Timer]] = {}
        self._clock = clock
        self._on_due = on_due
        self._call_later = call_later

    # ----- counts ------------------------------------------------------------

    def queued(self, task_name: str) -> int:
        """Runs of a task waiting in its lanes (not those waiting out a delay)."""
        return self._queued_per_task[task_name]

    def any_queued(self) -> bool:
        """Whether any run waits in a lane (runs waiting out a delay are not counted)."""
        return any(self._queued_per_task.values())

    def queued_outside(self, lanes: set[Lane]) -> int:
        """Runs waiting in every lane but these (not those waiting out a delay)."""
        return sum(len(queue) for lane, queue in self.lanes.items() if lane not in lanes)

    def lane_length(self, lane: Lane) -> int:
        queue = self.lanes.get(lane)
        return len(queue) if queue is not None else 0

    def waiting(self, task_name: str) -> int:
        """Runs of a task not started: in its lanes or waiting out a delay."""
        return self._queued_per_task.get(task_name, 0) + sum(
            1 for run, _ in self._delayed.values() if run.task_name == task_name
        )

    def waiting_of_account(self, account: str) -> int:
        """Runs a v3 account triggered that have not started."""
        queued = sum(len(queue) for (_, owner), queue in self.lanes.items() if owner == account)
        return queued + sum(1 for run, _ in self._delayed.values() if run.account == account)

    def delayed_ids(self) -> list[str]:
        return list(self._delayed)

    # ----- changes -------------------------------------------------------------

    def enqueue(self, *runs: Run) -> None:
        """File admitted runs at the end of their lanes (their input is counted already)."""
        for run in runs:
            lane = (run.task_name, run.account)
            queue = self.lanes[lane]
            queue.append(run)
            if len(queue) == 1:
                self._push_head(lane, queue)
            self._queued_per_task[run.task_name] += 1

    def _push_head(self, lane: Lane, queue: deque[Run]) -> None:
        head = queue[0]
        heapq.heappush(self._heads, (head.created_at, head.id, lane))

    def schedule(self, run: Run) -> None:
        """Queue a pending run now, or when its not_before comes."""
        self.inputs.add(run)
        delay = 0.0 if run.not_before is None else (run.not_before - self._clock()).total_seconds()
        if delay <= 0:
            self.enqueue(run)
            self._on_due()
            return
        self._delayed[run.id] = (run, self._call_later(delay, self._release_delayed, run.id))

    def _release_delayed(self, run_id: str) -> None:
        entry = self._delayed.pop(run_id, None)
        if entry is not None:
            self.enqueue(entry[0])
            self._on_due()

    def next_startable(self, may_start: Callable[[str, str | None], bool]) -> Run | None:
        """Take the oldest lane head whose (task, account) `may_start`; None if there is none."""
        heads, passed = self._heads, []
        pick: Run | None = None
        while heads:
            _created, run_id, lane = heads[0]
            queue = self.lanes.get(lane)
            if not queue or queue[0].id != run_id:
                heapq.heappop(heads)  # stale: that run left the head another way
                continue
            if may_start(*lane):
                heapq.heappop(heads)
                pick = queue.popleft()
                if queue:
                    self._push_head(lane, queue)
                break
            passed.append(heapq.heappop(heads))
        for entry in passed:
            heapq.heappush(heads, entry)
        if pick is not None:
            self._queued_per_task[pick.task_name] -= 1
            self.inputs.remove(pick)
        return pick

    def take(self, run_id: str) -> Run | None:
        """Take a run out of its lane or its delay; None if it is not waiting here."""
        for queue in self.lanes.values():
            for index, run in enumerate(queue):
                if run.id == run_id:
                    queue.remove(run)
                    if index == 0 and queue:
                        self._push_head((run.task_name, run.account), queue)
                    self._queued_per_task[run.task_name] -= 1
                    self.inputs.remove(run)
                    return run
        delayed = self._delayed.pop(run_id, None)
        if delayed is not None:
            delayed[1].cancel()
            self.inputs.remove(delayed[0])
            return delayed[0]
        return None

    def put_back(self, run: Run) -> None:
        """Return a taken run to its place in its lane (or to its delay, if not due yet)."""
        if run.not_before is not None and run.not_before > self._clock():
            self.schedule(run)
            return
        queue = self.lanes[(run.task_name, run.account)]
        place = (run.created_at, run.id)
        index = next(
            (i for i, queued in enumerate(queue) if (queued.created_at, queued.id) > place),
            len(queue),
        )
        queue.insert(index, run)
        if index == 0:
            self._push_head((run.task_name, run.account), queue)
        self._queued_per_task[run.task_name] += 1
        self.inputs.add(run)
        self._on_due()

    def drop_task(self, task_name: str) -> list[Run]:
        """Take out every waiting run of a task (lanes first, then delays); return them."""
        waiting: list[Run] = []
        for lane in [lane for lane in self.lanes if lane[0] == task_name]:
            waiting.extend(self.lanes.pop(lane))
        self._queued_per_task.pop(task_name, None)
        for run_id, (run, timer) in list(self._delayed.items()):
            if run.task_name == task_name:
                timer.cancel()
                del self._delayed[run_id]
                waiting.append(run)
        for run in waiting:
            self.inputs.remove(run)
        return waiting

    def clear(self) -> None:
        """Forget every waiting run (the daemon stops: they stay pending in the store)."""
        for _run, timer in self._delayed.values():
            timer.cancel()
        self._delayed.clear()
        self.lanes.clear()
        self._heads.clear()
        self._queued_per_task.clear()
        self.inputs.clear()
