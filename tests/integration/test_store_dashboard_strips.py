"""The overview's strips (store/dashboard.recent_runs_of_tasks) for many tasks, both databases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from runyard.domain.models import EndReason, Run, RunStatus, TriggeredBy
from runyard.store import RunStore
from runyard.store import dashboard as reads

MakeRun = Callable[..., Run]
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_strips_of_more_tasks_than_one_statement_takes(store: RunStore, make_run: MakeRun) -> None:
    # 520 tasks: three statements (200 tasks each at most, SQLite allows 500
    # terms in a compound SELECT), each task's runs newest first.
    names = [f"task-{i:03d}" for i in range(520)]
    runs = []
    for index, name in enumerate(names[::7]):
        for minute in range(index % 4):
            runs.append(
                make_run(
                    name,
                    RunStatus.ENDED,
                    T0 + timedelta(minutes=minute),
                    triggered_by=TriggeredBy.CRON,
                    end_reason=EndReason.FAILED if minute % 2 else EndReason.SUCCESS,
                    exit_code=minute % 2,
                    start_at=T0 + timedelta(minutes=minute),
                    end_at=T0 + timedelta(minutes=minute, seconds=minute + 1),
                    params={"who": "x"},
                )
            )
    runs.append(make_run("task-519", RunStatus.RUNNING, T0, start_at=T0))
    store.apply(runs, [])
    found = reads.recent_runs_of_tasks(store, names, 2)
    assert list(found) == names
    for name in names:
        stored = sorted(
            (run for run in runs if run.task_name == name),
            key=lambda run: (run.created_at, run.id),
            reverse=True,
        )[:2]
        got = found[name]
        assert [run.id for run in got] == [run.id for run in stored], name
        for run, want in zip(got, stored, strict=True):
            # Outcome and times as stored; params and data are not read.
            assert (run.status, run.end_reason, run.exit_code) == (
                want.status,
                want.end_reason,
                want.exit_code,
            )
            assert (run.created_at, run.start_at, run.end_at) == (
                want.created_at,
                want.start_at,
                want.end_at,
            )
            assert run.duration_ms == want.duration_ms and run.params == {}
    assert sum(len(recent) for recent in found.values()) > 75  # the loop above compared runs
