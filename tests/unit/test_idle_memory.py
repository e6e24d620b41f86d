"""Memory given back once the engine is idle after runs (runyard/engine/idle_memory.py)."""

from __future__ import annotations

from support.fake_time import FakeTimers

from runyard.engine.idle_memory import IDLE_DELAY_S, IdleMemory


class Engine:
    """What IdleMemory asks of the engine: whether anything runs or waits."""

    def __init__(self) -> None:
        self.busy = False
        self.given_back = 0

    def is_idle(self) -> bool:
        return not self.busy

    def give_back(self) -> None:
        self.given_back += 1


def make() -> tuple[Engine, FakeTimers, IdleMemory]:
    engine, timers = Engine(), FakeTimers()
    return engine, timers, IdleMemory(engine.is_idle, timers, give_back=engine.give_back)


def test_nothing_happens_until_a_run_ends() -> None:
    _, timers, idle = make()
    idle.on_event("run.created", {})
    idle.on_event("run.started", {})
    assert timers.made == []


def test_memory_is_given_back_once_idle_after_a_run_ended() -> None:
    engine, timers, idle = make()
    idle.on_event("run.ended", {})
    idle.on_event("run.ended", {})  # one check armed for both
    [timer] = timers.made
    assert timer.delay == IDLE_DELAY_S
    timer.fire()
    assert engine.given_back == 1


def test_a_busy_engine_is_left_alone_until_its_last_run_ends() -> None:
    engine, timers, idle = make()
    engine.busy = True
    idle.on_event("run.ended", {})
    timers.made[0].fire()
    assert engine.given_back == 0
    assert len(timers.made) == 1  # no polling while busy
    engine.busy = False
    idle.on_event("run.ended", {})  # the last run's end arms it again
    timers.made[1].fire()
    assert engine.given_back == 1


def test_a_failure_to_give_back_is_logged_not_raised(caplog) -> None:  # type: ignore[no-untyped-def]
    timers = FakeTimers()

    def broken() -> None:
        raise OSError("no")

    idle = IdleMemory(lambda: True, timers, give_back=broken)
    idle.on_event("run.ended", {})
    timers.made[0].fire()
    assert "could not give memory back" in caplog.text


def test_closing_cancels_the_armed_check() -> None:
    engine, timers, idle = make()
    idle.on_event("run.ended", {})
    idle.close()
    assert timers.made[0].cancelled
    idle.on_event("run.ended", {})
    assert len(timers.made) == 1
