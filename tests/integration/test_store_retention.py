"""RunStore retention: delete_expired and the task names that still have runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

import runyard.store.runs
from runyard.domain.models import EndReason, Run, RunStatus
from runyard.domain.queries import RunQuery
from runyard.store import RunStore

MakeRun = Callable[..., Run]

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def retention_runs(make_run: MakeRun) -> list[Run]:
    """Return 6 ended runs of "backup" (ending an hour apart), 2 active, 3 of "other"."""
    result = [
        make_run(
            "backup",
            RunStatus.ENDED,
            T0 + timedelta(hours=i),
            end_reason=EndReason.SUCCESS,
            start_at=T0 + timedelta(hours=i),
            end_at=T0 + timedelta(hours=i, minutes=5),
        )
        for i in range(6)
    ]
    result += [
        make_run("backup", RunStatus.PENDING, T0 - timedelta(days=9)),
        make_run("backup", RunStatus.RUNNING, T0 - timedelta(days=9), start_at=T0),
    ]
    result += [
        make_run(
            "other",
            RunStatus.ENDED,
            T0 - timedelta(days=9),
            end_reason=EndReason.MISSED,
            exit_code=-1,
            end_at=T0 - timedelta(days=9),
        )
        for _ in range(3)
    ]
    return result


@pytest.mark.parametrize(
    ("keep_runs", "ended_before", "deleted"),
    [
        (None, None, []),
        (10, None, []),
        (6, None, []),
        (4, None, [0, 1]),
        (0, None, [0, 1, 2, 3, 4, 5]),
        (None, T0 + timedelta(hours=2, minutes=5), [0, 1]),
        (None, T0 + timedelta(hours=2, minutes=6), [0, 1, 2]),
        (None, T0 - timedelta(days=30), []),
        (5, T0 + timedelta(hours=2, minutes=6), [0, 1, 2]),
        (1, T0 + timedelta(hours=2, minutes=6), [0, 1, 2, 3, 4]),
    ],
)
@pytest.mark.parametrize("batch", [1000, 2, 1])
def test_delete_expired(
    store: RunStore,
    make_run: MakeRun,
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
    keep_runs: int | None,
    ended_before: datetime | None,
    deleted: list[int],
) -> None:
    monkeypatch.setattr(runyard.store.runs, "_DELETE_BATCH", batch)
    runs = retention_runs(make_run)
    store.apply(runs, [])
    got = store.delete_expired("backup", keep_runs, ended_before)
    assert got == [runs[i].id for i in deleted]  # oldest first
    kept = [run for run in runs if run.id not in got]
    for run in runs:
        assert (store.get_run(run.id) is not None) == (run in kept)
    assert store.list_runs(RunQuery(task_name="backup"))[1] == 8 - len(deleted)
    assert store.list_runs(RunQuery())[1] == len(kept)


def test_delete_expired_refuses_negative_keep(store: RunStore) -> None:
    with pytest.raises(ValueError):
        store.delete_expired("backup", -1, None)


def test_task_names_with_runs(store: RunStore, make_run: MakeRun) -> None:
    assert store.task_names_with_runs() == []
    store.apply(retention_runs(make_run) + [make_run("zeta"), make_run("Alpha")], [])
    assert store.task_names_with_runs() == ["Alpha", "backup", "other", "zeta"]
    assert len(store.delete_expired("other", keep_runs=0, ended_before=None)) == 3
    assert store.task_names_with_runs() == ["Alpha", "backup", "zeta"]
