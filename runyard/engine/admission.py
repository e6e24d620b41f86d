"""One trigger's runs, as admission makes them: started, queued, or ended at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

from runyard import __version__
from runyard.domain.describe import describe_queued, describe_trigger
from runyard.domain.models import (
    EndReason,
    OverlapPolicy,
    Run,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.domain.policies import Admission, admit
from runyard.engine.ledger import Ledger, Reservation
from runyard.engine.runs import effective, ended_unrun, running_form
from runyard.store.claims import AdmitRun, AdmitTrigger
from runyard.store.inputs import InputFiles


@dataclasses.dataclass(frozen=True)
class TriggerRequest:
    """One trigger as admission takes it: checked parameters, chosen ids, input placed."""

    task: TaskDefinition
    ids: list[str]  # one per replica
    values: dict[str, str]
    triggered_by: TriggeredBy
    input_data: list[list[list[str]]] | None  # inline tables only; None when in files
    input_size: int | None
    note: str = ""
    account: str | None = None
    secret_hash: str | None = None
    node: str | None = None  # the node admitting it (PostgreSQL); None on SQLite


@dataclasses.dataclass
class TriggerPlan:
    """The runs of one trigger: all of them as recorded, and the pending ones among them.

    `kills`: how many of the task's oldest running runs to stop for them
    (on_overlap = kill). `starting`: the ids of the pending ones admitted to
    start now (the others wait in the queue).
    """

    runs: list[Run] = dataclasses.field(default_factory=list)
    pending: list[Run] = dataclasses.field(default_factory=list)
    kills: int = 0
    starting: set[str] = dataclasses.field(default_factory=set)


def plan_trigger(
    request: TriggerRequest,
    ledger: Ledger,
    reservation: Reservation,
    clock: Callable[[], datetime],
) -> TriggerPlan:
    """Decide each replica in turn under the ledger's load; hold its place in `reservation`.

    A replica that starts or queues counts in the load the next one sees.
    """
    task, account = request.task, request.account
    now = clock()
    admitted = effective(task)
    plan = TriggerPlan()
    for index in range(task.replicas):
        load = ledger.load(task.name, account)
        decision = admit(admitted, load)
        lines = [describe_trigger(request.triggered_by, index, __version__), request.note]
        if decision is Admission.QUEUE:
            lines.append(describe_queued(admitted, load))
        run = Run(
            id=request.ids[index],
            task_name=task.name,
            status=RunStatus.PENDING,
            created_at=now,
            triggered_by=request.triggered_by,
            replica_index=index,
            params=request.values,
            description="\n".join(filter(None, lines)),
            input_data=request.input_data,
            input_size=request.input_size,
            account=account,
            secret_hash=request.secret_hash,
            node=request.node,
        )
        if decision is Admission.SKIP:
            run = skipped(run, clock())
        elif decision is Admission.QUEUE_FULL:
            run = queue_full(run, task, clock())
        else:
            if decision is Admission.KILL_OLDEST:
                plan.kills += 1
            if decision is Admission.START:
                plan.starting.add(run.id)
                reservation.start()
            else:
                reservation.queue()
            plan.pending.append(run)
        plan.runs.append(run)
    return plan


def skipped(run: Run, now: datetime) -> Run:
    """`run` refused by on_overlap = skip: another run of its task was running."""
    return ended_unrun(
        run, EndReason.SKIPPED, "Another run of the task was running (on_overlap = skip).", now
    )


def queue_full(run: Run, task: TaskDefinition, now: datetime) -> Run:
    """`run` refused because its task's queue was full (max_queued)."""
    return ended_unrun(
        run, EndReason.QUEUE_FULL, f"{task.max_queued} runs were already waiting.", now
    )


def cluster_admission(task: TaskDefinition, plan: TriggerPlan, now: datetime) -> AdmitTrigger:
    """The runs of `plan` to admit under the task's counts across the cluster (several nodes).

    Each pending run goes with the forms it may be stored in: running (if
    this node has a slot for it now), skipped (on_overlap = skip) and
    queue_full (any policy but kill, which never refuses), as one node would
    store them (domain/policies.py `admit`).
    """
    admitted = effective(task)
    skip = admitted.on_overlap is OverlapPolicy.SKIP
    kill = admitted.on_overlap is OverlapPolicy.KILL
    runs = tuple(
        AdmitRun(
            pending=run,
            running=running_form(run, now) if run.id in plan.starting else None,
            skipped=skipped(run, now) if skip else None,
            queue_full=None if kill else queue_full(run, task, now),
        )
        for run in plan.pending
    )
    return AdmitTrigger(task.name, admitted.max_concurrent, task.max_queued, kill, runs)


def stage_input_files(
    inputs: InputFiles, ids: list[str], tables: list[list[list[str]]] | None
) -> None:
    """Write (unless a worker did) and link the input files of one trigger's runs."""
    if tables is not None:
        inputs.write(ids[0], tables)
    for replica_id in ids[1:]:
        inputs.link(ids[0], replica_id)


def delete_input_files(inputs: InputFiles, ids: list[str]) -> None:
    """Delete the input files of a trigger that was not recorded: they belong to nobody."""
    for run_id in ids:
        inputs.delete(run_id)
