"""One trigger's runs, as admission makes them: started, queued, or ended at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

from runyard import __version__
from runyard.domain.describe import describe_queued, describe_trigger
from runyard.domain.models import EndReason, Run, RunStatus, TaskDefinition, TriggeredBy
from runyard.domain.policies import Admission, admit
from runyard.engine.ledger import Ledger, Reservation
from runyard.engine.runs import effective, ended_unrun


@dataclasses.dataclass
class TriggerPlan:
    """The runs of one trigger: all of them as recorded, and the pending ones among them.

    `kills`: how many of the task's oldest running runs to stop for them
    (on_overlap = kill).
    """

    runs: list[Run] = dataclasses.field(default_factory=list)
    pending: list[Run] = dataclasses.field(default_factory=list)
    kills: int = 0


def plan_trigger(
    task: TaskDefinition,
    ids: list[str],
    ledger: Ledger,
    reservation: Reservation,
    clock: Callable[[], datetime],
    *,
    values: dict[str, str],
    triggered_by: TriggeredBy,
    input_data: list[list[list[str]]] | None,
    input_size: int | None,
    note: str,
    account: str | None,
    secret_hash: str | None,
) -> TriggerPlan:
    """Decide each replica in turn under the ledger's load; hold its place in `reservation`.

    A replica that starts or queues counts in the load the next one sees.
    """
    now = clock()
    admitted = effective(task)
    plan = TriggerPlan()
    for index in range(task.replicas):
        load = ledger.load(task.name, account)
        decision = admit(admitted, load)
        lines = [describe_trigger(triggered_by, index, __version__), note]
        if decision is Admission.QUEUE:
            lines.append(describe_queued(admitted, load))
        run = Run(
            id=ids[index],
            task_name=task.name,
            status=RunStatus.PENDING,
            created_at=now,
            triggered_by=triggered_by,
            replica_index=index,
            params=values,
            description="\n".join(filter(None, lines)),
            input_data=input_data,
            input_size=input_size,
            account=account,
            secret_hash=secret_hash,
        )
        if decision is Admission.SKIP:
            run = ended_unrun(
                run,
                EndReason.SKIPPED,
                "Another run of the task was running (on_overlap = skip).",
                clock(),
            )
        elif decision is Admission.QUEUE_FULL:
            run = ended_unrun(
                run,
                EndReason.QUEUE_FULL,
                f"{task.max_queued} runs were already waiting.",
                clock(),
            )
        else:
            if decision is Admission.KILL_OLDEST:
                plan.kills += 1
            if decision is Admission.START:
                reservation.start()
            else:
                reservation.queue()
            plan.pending.append(run)
        plan.runs.append(run)
    return plan
