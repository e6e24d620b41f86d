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
) -> RecoveryPlan:
    """End the `crashed` runs (and retry them if their task says so), queue the others.

    `strays` lists the process groups killed per crashed run. A pending run
    whose task is no longer configured ends skipped. A service's lifetime (a
    run of kind `service`, its task_name a service's) is only ever `running`:
    it ends crashed, and is not retried.
    """
    plan = RecoveryPlan()
    for run in leftovers:
        task = tasks.get(run.task_name)
        if run.id in crashed:
            groups = ", ".join(str(group) for group in strays.get(run.id, []))
            detail = (
                f"Processes it left running (process group {groups}) were killed." if groups else ""
            )
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
