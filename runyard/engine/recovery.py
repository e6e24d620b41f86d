"""What a starting daemon does with the runs a previous one left unfinished: a pure plan."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime

from runyard.domain.models import EXIT_CRASHED, EndReason, Run, RunKind, RunStatus, TaskDefinition
from runyard.engine.runs import ended, ended_unrun, retry_of


@dataclasses.dataclass
class RecoveryPlan:
    """Runs to store ended (`updates`) and retries to insert; `pending` runs to queue, in order.

    `retried` pairs each crashed run with its retry, for the retries whose
    input files must be linked before they are stored.
    """

    updates: list[Run] = dataclasses.field(default_factory=list)
    inserts: list[Run] = dataclasses.field(default_factory=list)
    pending: list[Run] = dataclasses.field(default_factory=list)
    retried: list[tuple[Run, Run]] = dataclasses.field(default_factory=list)

    def replace_retry(self, old: Run, new: Run) -> None:
        """Put `new` in the place of retry `old` (its input files linked, or not)."""
        self.inserts = [new if run is old else run for run in self.inserts]
        self.pending = [new if run is old else run for run in self.pending]


def crashed_ids(leftovers: Iterable[Run], started: Collection[str]) -> set[str]:
    """The runs that had started: recorded running, or about to be (in the start log)."""
    return {run.id for run in leftovers if run.status is RunStatus.RUNNING or run.id in started}


def plan_recovery(
    leftovers: Iterable[Run],
    crashed: Collection[str],
    strays: Mapping[str, Iterable[int]],
    tasks: Mapping[str, TaskDefinition],
    now: datetime,
    *,
    note: str = "",
) -> RecoveryPlan:
    """End the `crashed` runs (and retry them if their task says so), queue the others.

    `strays` lists the process groups killed per crashed run; `note` says
    why they crashed, when the caller knows (a fence). A pending run
    whose task is no longer configured ends skipped. A service's lifetime (a
    run of kind `service`, its task_name a service's) is only ever `running`:
    it ends crashed, and is not retried.
    """
    plan = RecoveryPlan()
    for run in leftovers:
        task = tasks.get(run.task_name)
        if run.id in crashed:
            groups = ", ".join(str(group) for group in strays.get(run.id, []))
            killed = (
                f"Processes it left running (process group {groups}) were killed." if groups else ""
            )
            detail = "\n".join(filter(None, [note, killed]))
            crashed_run = ended(
                run,
                EndReason.CRASHED,
                EXIT_CRASHED,
                now,
                detail=detail,
                start_at=run.start_at or now,
            )
            plan.updates.append(crashed_run)
            # A service's lifetime is never retried: its supervisor starts a fresh one.
            retryable = task if run.kind is RunKind.TASK else None
            retry = retry_of(crashed_run, retryable, now) if retryable is not None else None
            if retry is not None:
                plan.inserts.append(retry)
                plan.pending.append(retry)
                if retry.input_in_file:
                    plan.retried.append((crashed_run, retry))
        elif task is None:
            plan.updates.append(
                ended_unrun(
                    run,
                    EndReason.SKIPPED,
                    f"Task {run.task_name!r} is no longer in the config.",
                    now,
                )
            )
        else:
            plan.pending.append(run)
    return plan


@dataclasses.dataclass
class TakeOver:
    """What a node does with a dead node's active runs (see plan_takeover)."""

    updates: list[Run] = dataclasses.field(default_factory=list)  # ended here
    inserts: list[Run] = dataclasses.field(default_factory=list)  # retries, this node's
    adopted: list[Run] = dataclasses.field(default_factory=list)  # pending, now this node's


def plan_takeover(
    leftovers: Iterable[Run],
    dead_node: str,
    last_renewed: datetime,
    node: str,
    tasks: Mapping[str, TaskDefinition],
    now: datetime,
) -> TakeOver:
    """End the running runs of a dead node as crashed (retried here per policy); adopt its queue.

    Its processes are on another machine, gone or cut off: nothing is killed
    from here, and its log files and input files stay on that machine's disk.
    A run whose input data is such a file is neither retried nor adopted
    here: no node but the dead one can read that input.
    """
    plan = TakeOver()
    lapsed = (
        f"Node {dead_node!r} stopped renewing its lease (last renewed "
        f"{last_renewed.isoformat(timespec='seconds')}); node {node!r} ended the run."
    )
    for run in leftovers:
        task = tasks.get(run.task_name)
        if run.status is RunStatus.RUNNING:
            crashed_run = ended(
                run,
                EndReason.CRASHED,
                EXIT_CRASHED,
                now,
                detail=lapsed,
                start_at=run.start_at or now,
            )
            # A service's lifetime is never retried: its node's supervisor is gone.
            retryable = task if run.kind is RunKind.TASK else None
            retry = retry_of(crashed_run, retryable, now) if retryable is not None else None
            if retry is not None and retry.input_in_file:
                crashed_run = dataclasses.replace(
                    crashed_run,
                    description=f"{crashed_run.description}\nNot retried: its input data is a "
                    f"file on node {dead_node!r}.",
                )
                retry = None
            plan.updates.append(crashed_run)
            if retry is not None:
                plan.inserts.append(dataclasses.replace(retry, node=node))
        elif task is None:
            plan.updates.append(
                ended_unrun(
                    run,
                    EndReason.SKIPPED,
                    f"Task {run.task_name!r} is not in the config of node {node!r}, "
                    f"which took the run over from node {dead_node!r}.",
                    now,
                )
            )
        elif run.input_in_file:
            plan.updates.append(
                ended_unrun(
                    run,
                    EndReason.SKIPPED,
                    f"Node {dead_node!r} stopped renewing its lease while the run waited; "
                    f"its input data is a file on that node, which node {node!r} cannot read.",
                    now,
                )
            )
        else:
            plan.adopted.append(dataclasses.replace(run, node=node))
    return plan
