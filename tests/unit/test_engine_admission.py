"""Admission without processes: the ledger's counts and one trigger's plan, on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runyard import __version__
from runyard.domain.models import (
    EXIT_NOT_RUN,
    EndReason,
    OverlapPolicy,
    Run,
    RunStatus,
    TaskDefinition,
    TriggeredBy,
)
from runyard.domain.policies import Load
from runyard.engine.admission import TriggerPlan, TriggerRequest, plan_trigger
from runyard.engine.ledger import Ledger
from runyard.engine.queues import RunQueues

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def no_timers(delay: float, callback: object, *args: object) -> None:
    raise AssertionError("admission sets no timer")


def ledger(max_concurrent_runs: int = 10, **account_limits: int | None) -> Ledger:
    queues = RunQueues(clock=FakeClock(), on_due=lambda: None, call_later=no_timers)  # type: ignore[arg-type]
    return Ledger(queues, max_concurrent_runs=max_concurrent_runs, account_limits=account_limits)


def pending(run_id: str, task: str = "t", account: str | None = None) -> Run:
    return Run(
        id=run_id,
        task_name=task,
        status=RunStatus.PENDING,
        created_at=T0,
        triggered_by=TriggeredBy.API,
        account=account,
    )


def test_load_counts_running_runs_and_reservations_of_the_task_account_and_lane() -> None:
    book = ledger(4, acme=2)
    book.occupy(pending("r1", account="acme"))
    book.occupy(pending("r2", task="u"))
    book._queues.enqueue(pending("q1", account="acme"), pending("q2"))
    with book.reserve("t", "acme") as reservation:
        reservation.start()
        reservation.queue()
        reservation.queue()
        assert book.load("t", "acme") == Load(
            task_running=2,
            task_queued=4,
            global_running=3,
            global_limit=4,
            account_running=2,
            account_limit=2,
            lane_queued=3,
        )
        assert book.load("u", None) == Load(1, 0, 3, 4, 1, None, 0)
    assert book.load("t", "acme") == Load(1, 2, 2, 4, 1, 2, 1)


def test_a_reservation_is_given_back_when_admission_fails() -> None:
    book = ledger(1)
    with pytest.raises(RuntimeError), book.reserve("t", None) as reservation:
        reservation.start()
        reservation.queue()
        raise RuntimeError("the insert failed")
    assert book.load("t", None) == Load(0, 0, 0, 1, 0, None, 0)


def test_releasing_twice_gives_back_nothing_more() -> None:
    book = ledger(1)
    with book.reserve("t", None) as reservation:
        reservation.start()
        reservation.release()
        assert book.load("t", None).global_running == 0
    assert book.load("t", None).global_running == 0


def test_a_vacated_slot_frees_the_task_the_account_and_the_daemon() -> None:
    book = ledger(1, acme=1)
    first = pending("r1", account="acme")
    book.occupy(first)
    assert not book.has_free_slot()
    task = TaskDefinition(name="t", run="true", max_concurrent=5)
    assert not book.may_start(task, "acme")
    assert book.may_start(task, "other")
    book.vacate(first)
    assert book.has_free_slot()
    assert book.may_start(task, "acme")
    assert (book.running_of_task("t"), book.running_of_account("acme")) == (0, 0)


def test_may_start_honours_the_tasks_limit_and_no_task_never_starts() -> None:
    book = ledger(10)
    task = TaskDefinition(name="t", run="true", max_concurrent=2)
    book.occupy(pending("r1"))
    assert book.may_start(task, None)
    book.occupy(pending("r2"))
    assert not book.may_start(task, None)
    assert not book.may_start(None, None)


def test_new_limits_apply_to_the_next_load() -> None:
    book = ledger(1, acme=1)
    book.set_limits(3, {"acme": None})
    assert book.load("t", "acme") == Load(0, 0, 0, 3, 0, None, 0)


def plan(
    task: TaskDefinition, book: Ledger, *, account: str | None = None, note: str = ""
) -> tuple[TriggerPlan, tuple[int, int]]:
    clock = FakeClock()
    ids = [f"run{index}" for index in range(task.replicas)]
    with book.reserve(task.name, account) as reservation:
        request = TriggerRequest(
            task, ids, {}, TriggeredBy.API, None, None, note=note, account=account
        )
        made = plan_trigger(request, book, reservation, clock)
        held = (reservation.starts, reservation.queued)
    return made, held


FIRST_LINE = f"runyard {__version__}: triggered through the API."


def test_replicas_of_one_trigger_start_side_by_side_past_max_concurrent() -> None:
    task = TaskDefinition(name="t", run="true", max_concurrent=1, replicas=3)
    made, held = plan(task, ledger(10), note="a note")
    assert [run.status for run in made.runs] == [RunStatus.PENDING] * 3
    assert made.pending == made.runs
    assert held == (3, 0)
    assert made.runs[0].description == f"{FIRST_LINE}\na note"
    assert made.runs[0].created_at == T0
    assert [run.replica_index for run in made.runs] == [0, 1, 2]
    assert made.kills == 0


def test_replicas_past_the_daemons_limit_queue_behind_those_that_start() -> None:
    task = TaskDefinition(name="t", run="true", replicas=3)
    book = ledger(2)
    made, held = plan(task, book)
    assert held == (2, 1)
    assert made.runs[2].description == (
        FIRST_LINE[:-1] + ", replica 2.\nQueued: the daemon's limit of 2 runs at once was reached;"
        " it starts the moment a slot frees."
    )


def test_a_busy_task_that_skips_ends_the_run_at_once() -> None:
    task = TaskDefinition(name="t", run="true", on_overlap=OverlapPolicy.SKIP)
    book = ledger(10)
    book.occupy(pending("r0"))
    made, held = plan(task, book)
    [run] = made.runs
    assert made.pending == []
    assert held == (0, 0)
    assert (run.status, run.end_reason, run.exit_code, run.end_at) == (
        RunStatus.ENDED,
        EndReason.SKIPPED,
        EXIT_NOT_RUN,
        T0,
    )
    assert run.description.endswith("Another run of the task was running (on_overlap = skip)."), (
        run.description
    )


def test_a_full_queue_refuses_the_run() -> None:
    task = TaskDefinition(name="t", run="true", max_queued=1)
    book = ledger(10)
    book.occupy(pending("r0"))
    book._queues.enqueue(pending("q0"))
    made, held = plan(task, book)
    [run] = made.runs
    assert (run.end_reason, held) == (EndReason.QUEUE_FULL, (0, 0))
    assert "1 runs were already waiting." in run.description


def test_a_busy_task_that_kills_asks_for_one_kill_per_run_and_queues_it() -> None:
    task = TaskDefinition(name="t", run="true", on_overlap=OverlapPolicy.KILL, replicas=2)
    book = ledger(10)
    book.occupy(pending("r0"))
    book.occupy(pending("r1"))
    made, held = plan(task, book)
    assert made.kills == 2
    assert held == (0, 2)
    assert [run.status for run in made.pending] == [RunStatus.PENDING] * 2


def test_an_account_at_its_limit_queues_in_its_own_lane() -> None:
    task = TaskDefinition(name="t", run="true", max_concurrent=5)
    book = ledger(10, acme=1)
    book.occupy(pending("r0", account="acme"))
    made, held = plan(task, book, account="acme")
    assert held == (0, 1)
    assert made.runs[0].account == "acme"
    assert made.runs[0].description.endswith(
        "Queued: the account's limit of 1 run at once was reached;"
        " it starts the moment a slot frees."
    )
    other, held = plan(task, book, account="other")
    assert held == (1, 0)
