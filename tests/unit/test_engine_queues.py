"""The engine's queues on a fake clock and a fake timer factory: no loop, no processes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from support.fake_time import T0, FakeClock, FakeTimers

from runyard.domain.models import Run, RunStatus, TriggeredBy
from runyard.engine.queues import RunQueues


@dataclass
class Harness:
    clock: FakeClock
    timers: FakeTimers
    queues: RunQueues
    due: list[int]


def harness() -> Harness:
    clock, timers, due = FakeClock(), FakeTimers(), [0]

    def on_due() -> None:
        due[0] += 1

    queues = RunQueues(clock=clock, on_due=on_due, call_later=timers)
    return Harness(clock, timers, queues, due)


def run(
    run_id: str,
    task: str = "t",
    *,
    account: str | None = None,
    created: int = 0,
    not_before: datetime | None = None,
    input_size: int | None = None,
) -> Run:
    return Run(
        id=run_id,
        task_name=task,
        status=RunStatus.PENDING,
        created_at=T0 + timedelta(seconds=created),
        triggered_by=TriggeredBy.API,
        account=account,
        not_before=not_before,
        input_size=input_size,
    )


def anything(_task: str, _account: str | None) -> bool:
    return True


def test_a_due_run_is_queued_at_once_and_a_later_one_waits_on_a_timer_of_its_delay() -> None:
    h = harness()
    h.queues.schedule(run("now"))
    h.queues.schedule(run("later", not_before=T0 + timedelta(seconds=7.5)))

    assert h.due == [1]
    assert [timer.delay for timer in h.timers.made] == [7.5]
    assert h.queues.queued("t") == 1
    assert h.queues.waiting("t") == 2

    h.clock.now = T0 + timedelta(seconds=7.5)
    h.timers.made[0].fire()
    assert h.due == [2]
    assert h.queues.queued("t") == 2
    assert [queued.id for queued in h.queues.lanes[("t", None)]] == ["now", "later"]


def test_a_not_before_already_past_queues_at_once() -> None:
    h = harness()
    h.queues.schedule(run("late", not_before=T0 - timedelta(seconds=1)))
    assert h.timers.made == []
    assert h.queues.queued("t") == 1


def test_next_startable_takes_the_oldest_head_among_the_lanes_that_may_start() -> None:
    h = harness()
    h.queues.enqueue(run("b1", account="b", created=2), run("b2", account="b", created=3))
    h.queues.enqueue(run("a1", account="a", created=5))
    h.queues.enqueue(run("other", task="u", created=1))

    def not_task_u(task: str, _account: str | None) -> bool:
        return task != "u"

    assert [picked.id for picked in iter(lambda: h.queues.next_startable(not_task_u), None)] == [
        "b1",
        "b2",
        "a1",
    ]
    assert h.queues.queued("t") == 0
    assert h.queues.queued("u") == 1
    assert h.queues.next_startable(lambda task, account: False) is None
    picked = h.queues.next_startable(anything)
    assert picked is not None and picked.id == "other"


def test_equal_creation_times_start_in_id_order() -> None:
    h = harness()
    h.queues.enqueue(run("02", account="x"), run("03", account="x"))
    h.queues.enqueue(run("01", account="y"))
    taken = [h.queues.next_startable(anything) for _ in range(3)]
    assert [picked.id for picked in taken if picked is not None] == ["01", "02", "03"]


def test_take_removes_a_queued_run_and_cancels_a_delayed_ones_timer() -> None:
    h = harness()
    h.queues.schedule(run("queued", input_size=100))
    h.queues.schedule(run("delayed", not_before=T0 + timedelta(minutes=1), input_size=20))
    assert h.queues.inputs.of_task("t") == 120

    queued = h.queues.take("queued")
    assert queued is not None and queued.id == "queued"
    assert h.queues.queued("t") == 0
    assert h.queues.inputs.of_task("t") == 20

    delayed = h.queues.take("delayed")
    assert delayed is not None and delayed.id == "delayed"
    assert h.timers.made[0].cancelled
    assert h.queues.waiting("t") == 0
    assert h.queues.inputs.of_task("t") == 0
    assert h.queues.take("delayed") is None


def test_a_run_put_back_regains_its_place_by_creation_time() -> None:
    h = harness()
    h.queues.schedule(run("r1", created=1))
    h.queues.schedule(run("r2", created=2))
    h.queues.schedule(run("r3", created=3))
    taken = h.queues.take("r2")
    assert taken is not None
    h.queues.put_back(taken)
    assert [queued.id for queued in h.queues.lanes[("t", None)]] == ["r1", "r2", "r3"]
    assert h.queues.queued("t") == 3
    assert h.due == [4]


def test_a_retry_put_back_before_its_delay_ran_out_waits_out_the_rest() -> None:
    h = harness()
    h.queues.schedule(run("retry", not_before=T0 + timedelta(seconds=10)))
    taken = h.queues.take("retry")
    assert taken is not None
    h.clock.now = T0 + timedelta(seconds=4)
    h.queues.put_back(taken)
    assert [timer.delay for timer in h.timers.made] == [10.0, 6.0]
    assert h.queues.queued("t") == 0
    assert h.queues.waiting("t") == 1


def test_drop_task_takes_its_lanes_then_its_delayed_runs_and_only_them() -> None:
    h = harness()
    h.queues.schedule(run("a", account="x", input_size=5))
    h.queues.schedule(run("b", account=None))
    h.queues.schedule(run("c", not_before=T0 + timedelta(seconds=3)))
    h.queues.schedule(run("keep", task="u"))

    assert [dropped.id for dropped in h.queues.drop_task("t")] == ["a", "b", "c"]
    assert h.timers.made[0].cancelled
    assert h.queues.waiting("t") == 0
    assert h.queues.waiting("u") == 1
    assert h.queues.inputs.of_account("x") == 0


def test_account_counts_cover_lanes_and_delays() -> None:
    h = harness()
    h.queues.schedule(run("a1", account="acme"))
    h.queues.schedule(run("a2", task="u", account="acme"))
    h.queues.schedule(run("a3", account="acme", not_before=T0 + timedelta(seconds=9)))
    h.queues.schedule(run("b1", account="other"))
    assert h.queues.waiting_of_account("acme") == 3
    assert h.queues.waiting_of_account("other") == 1
    assert h.queues.lane_length(("t", "acme")) == 1
    assert h.queues.lane_length(("t", "nobody")) == 0


def test_clear_cancels_every_timer_and_forgets_every_run() -> None:
    h = harness()
    h.queues.schedule(run("q", input_size=9))
    h.queues.schedule(run("d", not_before=T0 + timedelta(seconds=3)))
    h.queues.clear()
    assert h.timers.made[0].cancelled
    assert h.queues.waiting("t") == 0
    assert h.queues.inputs.of_task("t") == 0
    assert h.queues.next_startable(anything) is None
