"""Claiming run starts on a PostgreSQL that several nodes share: limits and FIFO cluster-wide.

A node that wants to start a pending run of its own *claims* it: in the
transaction that records the start, under a transaction-scoped advisory lock
per task and per v3 account (taken in one order by every node, so claims
never deadlock), it counts the `running` rows of that task and account
across the cluster. If both are under their limits, the run is updated to
`running` in one statement that also checks it is still pending, still this
node's, and that the places left outnumber the older runs of its lane (task
and account) waiting now, wherever they wait (FIFO across nodes: a younger
run never takes a place an older one waits for). Two nodes claiming at once for one
task queue on the lock, so the second one counts the first one's start: a
limit is never passed, whatever the timing.

A claim either starts the run (GRANTED), leaves it pending for later (WAIT:
a limit is full, or an older run of its lane waits elsewhere), or finds it
gone (GONE: another node took it, or it was stopped while it waited).

A trigger is admitted the same way, in the transaction that inserts its
runs (`admit_triggers`): under its task's lock, the runs the node has a slot
for are claimed at once, and each one left waiting is checked against the
task's counts across the cluster, as one node checks its own: on_overlap =
skip ends it SKIPPED while the task is busy; max_queued ends it QUEUE_FULL
once that many runs wait; on_overlap = kill asks the oldest running run not
already asked to stop, wherever it runs (store/notices.py), to stop.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runyard.domain.models import Run, RunStatus
from runyard.store._rows import SUMMARY_COLUMNS, row_to_run, update_values
from runyard.store.schema import runs

_PENDING = RunStatus.PENDING.value
_RUNNING = RunStatus.RUNNING.value


class Claim(enum.Enum):
    GRANTED = "granted"
    WAIT = "wait"
    GONE = "gone"
    # A trigger's run ended at admission (admit_triggers): stored in its ended form.
    SKIPPED = "skipped"
    QUEUE_FULL = "queue_full"


@dataclass
class StartLimits:
    """The limits a batch of claims is checked against: the node's config, all nodes alike."""

    tasks: dict[str, int] = field(default_factory=dict)  # task name -> max_concurrent
    accounts: dict[str, int | None] = field(default_factory=dict)  # v3 account -> its limit

    def merge(self, other: StartLimits) -> None:
        self.tasks.update(other.tasks)
        self.accounts.update(other.accounts)


@dataclass(frozen=True)
class AdmitRun:
    """One run of a trigger as its node admits it, with the forms it may be stored in."""

    pending: Run  # as inserted
    running: Run | None = None  # its running form, when the node has a slot for it now
    skipped: Run | None = None  # ended while its task is busy (on_overlap = skip)
    queue_full: Run | None = None  # ended when max_queued runs already wait (not kill)


@dataclass(frozen=True)
class AdmitTrigger:
    """One trigger's runs, admitted under its task's counts across the cluster."""

    task: str
    max_concurrent: int  # as admission sees it (replicas run side by side)
    max_queued: int
    kill: bool  # on_overlap = kill: each run that waits has the oldest running one stopped
    runs: tuple[AdmitRun, ...]


def _lock(connection: Connection, kind: str, name: str) -> None:
    key = sa.func.hashtextextended(sa.literal(f"runyard.{kind}:{name}"), 0)
    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def lock_lanes(connection: Connection, starts: Sequence[Run], tasks: Iterable[str] = ()) -> None:
    """Take the advisory locks of these runs' tasks and accounts, first thing in the transaction.

    `tasks`: more tasks to lock (those of triggers being admitted). Before
    any row lock: a transaction that held a row lock while it waited here
    could deadlock with one that holds the lock and waits for the row. Tasks
    then accounts, each sorted: every node takes them in one order.
    """
    for name in sorted({run.task_name for run in starts} | set(tasks)):
        _lock(connection, "task", name)
    for name in sorted({run.account for run in starts if run.account is not None}):
        _lock(connection, "account", name)


def _running_counts(
    connection: Connection, column: sa.Column[str], names: Sequence[str]
) -> dict[str, int]:
    if not names:
        return {}
    rows = connection.execute(
        sa.select(column, sa.func.count())
        .where(runs.c.status == _RUNNING, column.in_(names))
        .group_by(column)
    )
    return {name: count for name, count in rows}


_older = runs.alias("older")
# The older runs of the candidate's lane that may start now, counted up to
# `room` (the places its task and account have left): an index walk of at
# most `room` entries of (task, status, age).
_OLDER_WAITING = (
    sa.select(sa.literal(1))
    .where(
        _older.c.task_name == sa.bindparam("lane_task"),
        _older.c.account.is_not_distinct_from(sa.bindparam("lane_account")),
        _older.c.status == _PENDING,
        sa.or_(_older.c.not_before.is_(None), _older.c.not_before <= sa.func.now()),
        sa.tuple_(_older.c.created_at, _older.c.id)
        < sa.tuple_(sa.bindparam("created"), sa.bindparam("same_id")),
    )
    .limit(sa.bindparam("room"))
    .subquery()
)

# One statement per run: start it if it is still pending and this node's and
# the places left under its limits outnumber the older runs of its lane that
# wait, wherever they wait (FIFO across nodes: a younger run never takes the
# place an older one waits for; with room for all, no slot idles for order's
# sake). The advisory locks come first in the transaction, so waiting here on
# a row another transaction holds cannot close a cycle with one waiting for
# those locks.
_START = (
    sa.update(runs)
    .where(
        runs.c.id == sa.bindparam("run_id"),
        runs.c.node == sa.bindparam("claimer"),
        runs.c.status == _PENDING,
        sa.select(sa.func.count()).select_from(_OLDER_WAITING).scalar_subquery()
        < sa.bindparam("room"),
    )
    .values(
        status=sa.bindparam("new_status"),
        start_at=sa.bindparam("new_start_at"),
        description=sa.bindparam("new_description"),
    )
    .returning(runs.c.id)
)


def claim_starts(
    connection: Connection,
    node: str,
    starts: Sequence[Run],
    limits: StartLimits,
    *,
    replay: bool = False,
) -> dict[str, Claim]:
    """Start (as `running`, as given) the runs of `starts` that may start now; say each one's fate.

    `starts` are this node's runs in their running form (status, start_at,
    description). `replay`: a commit of these claims may have landed already
    (its answer was lost); the runs it started count as granted.
    """
    outcome: dict[str, Claim] = {}
    if replay:
        landed = connection.execute(
            sa.select(runs.c.id, runs.c.start_at).where(
                runs.c.id.in_([run.id for run in starts]),
                runs.c.node == node,
                runs.c.status == _RUNNING,
            )
        )
        given = {run.id: run.start_at for run in starts}
        outcome = {run_id: Claim.GRANTED for run_id, start in landed if given[run_id] == start}
    lanes: dict[tuple[str, str | None], list[Run]] = defaultdict(list)
    for run in sorted(starts, key=lambda run: (run.created_at, run.id)):
        if run.id not in outcome:
            lanes[(run.task_name, run.account)].append(run)
    tasks = sorted({task for task, _ in lanes})
    accounts = sorted({account for _, account in lanes if account is not None})
    task_running = _running_counts(connection, runs.c.task_name, tasks)
    account_running = _running_counts(connection, runs.c.account, accounts)
    for (task, lane_account), waiting in lanes.items():
        account = lane_account
        for run in waiting:
            room = limits.tasks.get(task, 0) - task_running.get(task, 0)
            limit = limits.accounts.get(account) if account is not None else None
            if limit is not None:
                room = min(room, limit - account_running.get(account or "", 0))
            if room <= 0:
                outcome[run.id] = Claim.WAIT
                continue
            values = update_values(run)
            started = connection.execute(
                _START,
                {
                    "run_id": run.id,
                    "claimer": node,
                    "lane_task": task,
                    "lane_account": account,
                    "created": run.created_at,
                    "same_id": run.id,
                    "room": room,
                    "new_status": values["status"],
                    "new_start_at": values["start_at"],
                    "new_description": values["description"],
                },
            ).first()
            if started is None:
                # Not started: an older run of its lane waits (WAIT), or another
                # node took it, or it ended, while it waited here (GONE).
                row = connection.execute(
                    sa.select(runs.c.status, runs.c.node).where(runs.c.id == run.id)
                ).first()
                mine = row is not None and row.status == _PENDING and row.node == node
                outcome[run.id] = Claim.WAIT if mine else Claim.GONE
                continue
            outcome[run.id] = Claim.GRANTED
            task_running[task] = task_running.get(task, 0) + 1
            if account is not None:
                account_running[account] = account_running.get(account, 0) + 1
    return outcome


def adopt_pending(
    connection: Connection,
    node: str,
    room: int,
    limits: StartLimits,
    waited_seconds: float,
    scan: int = 200,
) -> list[Run]:
    """Make this node the owner of other nodes' oldest startable pending runs; return them.

    At most `room` runs, each of a task (and account) with room under its
    limit cluster-wide, that may start now and have waited `waited_seconds`
    or more: runs their own node does not start (it is full, or it waits
    behind a run queued elsewhere). Rows being claimed by their node now are
    skipped (SKIP LOCKED); after this commits, that node's claim finds them
    gone. Runs whose input data is a file stay with their node (only it can
    read the file), and so do runs of tasks this node does not know.
    """
    waited = sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, waited_seconds)
    candidates = [
        row_to_run(row)
        for row in connection.execute(
            sa.select(*SUMMARY_COLUMNS, runs.c.input_data)
            .where(
                runs.c.status == _PENDING,
                runs.c.node != node,
                runs.c.created_at <= waited,
                sa.or_(runs.c.not_before.is_(None), runs.c.not_before <= waited),
                sa.or_(runs.c.input_size.is_(None), runs.c.input_data.is_not(None)),
                runs.c.task_name.in_(sorted(limits.tasks)),
            )
            .order_by(runs.c.created_at, runs.c.id)
            .limit(scan)
            .with_for_update(skip_locked=True)
        ).mappings()
    ]
    if not candidates:
        return []
    tasks = sorted({run.task_name for run in candidates})
    accounts = sorted({run.account for run in candidates if run.account is not None})
    task_running = _running_counts(connection, runs.c.task_name, tasks)
    account_running = _running_counts(connection, runs.c.account, accounts)
    adopted: list[Run] = []
    for run in candidates:
        if len(adopted) >= room:
            break
        account_limit = limits.accounts.get(run.account) if run.account is not None else None
        if task_running.get(run.task_name, 0) >= limits.tasks[run.task_name] or (
            account_limit is not None and account_running.get(run.account or "", 0) >= account_limit
        ):
            continue
        # Counted as if started: more of its task would not fit either.
        task_running[run.task_name] = task_running.get(run.task_name, 0) + 1
        if run.account is not None:
            account_running[run.account] = account_running.get(run.account, 0) + 1
        adopted.append(dataclasses.replace(run, node=node))
    if adopted:
        connection.execute(
            sa.update(runs).where(runs.c.id.in_([run.id for run in adopted])).values(node=node)
        )
    return adopted


def admitted_before(
    connection: Connection, node: str, triggers: Sequence[AdmitTrigger]
) -> dict[str, Claim]:
    """The fates of these triggers' runs stored by a commit whose answer was lost (replay).

    Read before anything is inserted: a run found here was admitted then.
    """
    ids = [run.pending.id for trigger in triggers for run in trigger.runs]
    found = connection.execute(
        sa.select(runs.c.id, runs.c.status, runs.c.node, runs.c.end_reason).where(
            runs.c.id.in_(ids)
        )
    )
    fates: dict[str, Claim] = {}
    for run_id, status, owner, reason in found:
        if status == _RUNNING and owner == node:
            fates[run_id] = Claim.GRANTED
        elif status == _PENDING:
            fates[run_id] = Claim.WAIT
        elif reason in (Claim.SKIPPED.value, Claim.QUEUE_FULL.value):
            fates[run_id] = Claim(reason)
        else:
            fates[run_id] = Claim.GONE  # ended (stopped) or taken since
    return fates


def _waiting_counts(
    connection: Connection, tasks: Sequence[str], leave_out: Sequence[str]
) -> dict[str, int]:
    """Runs of these tasks waiting for a slot now, on any node (not those waiting out a delay)."""
    rows = connection.execute(
        sa.select(runs.c.task_name, sa.func.count())
        .where(
            runs.c.task_name.in_(tasks),
            runs.c.status == _PENDING,
            sa.or_(runs.c.not_before.is_(None), runs.c.not_before <= sa.func.now()),
            runs.c.id.not_in(leave_out),
        )
        .group_by(runs.c.task_name)
    )
    return {name: count for name, count in rows}


def _running_at(connection: Connection, task: str, place: int) -> str | None:
    """The id of the task's running run at `place` (0: the oldest), on any node."""
    return connection.execute(
        sa.select(runs.c.id)
        .where(runs.c.task_name == task, runs.c.status == _RUNNING)
        .order_by(runs.c.start_at, runs.c.id)
        .offset(place)
        .limit(1)
    ).scalar()


@dataclass
class Admitted:
    """What `admit_triggers` decided: each run's fate, the ends to store, the runs to stop."""

    fates: dict[str, Claim] = field(default_factory=dict)
    refused: list[Run] = field(default_factory=list)  # ended forms to store over the inserts
    stop: list[str] = field(default_factory=list)  # running runs on_overlap = kill stops


def admit_triggers(
    connection: Connection,
    triggers: Sequence[AdmitTrigger],
    claimed: Mapping[str, Claim],
    before: Mapping[str, Claim],
) -> Admitted:
    """Decide the fate of each run of `triggers`, inserted pending in this transaction.

    Called under the tasks' locks, after the runs with a running form were
    claimed (`claimed`). A run granted there started; each other one is
    checked against its task across the cluster, in order, as one node
    checks a trigger against its own counts (domain/policies.py): a busy
    task skips it (on_overlap = skip) or has its oldest running run stopped
    for it (kill; each waiting run has its own: the oldest running run past
    as many as wait before it); a run finding max_queued runs waiting ends
    queue_full; any other waits. `before`: fates a lost commit stored (replay).
    """
    admitted = Admitted()
    leave_out = [run.pending.id for trigger in triggers for run in trigger.runs]
    # Only the tasks with a run left waiting are counted: a trigger whose runs
    # all started (the usual case with room) costs no count at all.
    tasks = sorted(
        {
            trigger.task
            for trigger in triggers
            for run in trigger.runs
            if run.pending.id not in before and claimed.get(run.pending.id) is not Claim.GRANTED
        }
    )
    running = _running_counts(connection, runs.c.task_name, tasks) if tasks else {}
    waiting = _waiting_counts(connection, tasks, leave_out) if tasks else {}
    for trigger in triggers:
        task = trigger.task
        for run in trigger.runs:
            run_id = run.pending.id
            fate = before.get(run_id)
            if fate is None:
                fate = claimed.get(run_id, Claim.WAIT)
            if fate is not Claim.WAIT or run_id in before:
                admitted.fates[run_id] = fate
                continue
            busy = running.get(task, 0) >= trigger.max_concurrent
            ahead = waiting.get(task, 0)
            if busy and run.skipped is not None:
                admitted.refused.append(run.skipped)
                fate = Claim.SKIPPED
            elif busy and trigger.kill:
                victim = _running_at(connection, task, ahead)
                if victim is not None:
                    admitted.stop.append(victim)
                waiting[task] = ahead + 1
            elif ahead >= trigger.max_queued and run.queue_full is not None:
                admitted.refused.append(run.queue_full)
                fate = Claim.QUEUE_FULL
            else:
                waiting[task] = ahead + 1
            admitted.fates[run_id] = fate
    return admitted
