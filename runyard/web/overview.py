"""The overview page: counts, every task with its state and recent outcomes, up next."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from runyard.app import Runyard
from runyard.domain.models import FAILURE_LIKE, EndReason, Run, RunStatus
from runyard.domain.services import is_ready
from runyard.store import dashboard as reads
from runyard.web.pages import (
    context,
    current_session,
    runyard_of,
)
from runyard.web.render import page

router = APIRouter(include_in_schema=False)

STRIP_RUNS = 20  # outcomes in a task's strip on the overview


@dataclass(frozen=True)
class TaskRow:
    name: str
    display: str
    state: str  # running / paused / scheduled / manual
    next_at: datetime | None
    zone: str
    last: Run | None
    strip: list[Run]
    running: int
    queued: int


def _task_rows(runyard: Runyard, recent: dict[str, list[Run]]) -> list[TaskRow]:
    rows = []
    for task in runyard.tasks():
        paused, next_at = runyard.schedule_state(task.name)
        running, queued = runyard.task_counts(task.name)
        if running:
            state = "running"
        elif paused:
            state = "paused"
        elif task.schedule is not None:
            state = "scheduled"
        else:
            state = "manual"
        runs = recent.get(task.name, [])
        last = next((run for run in runs if run.status is RunStatus.ENDED), None)
        rows.append(
            TaskRow(
                name=task.name,
                display=task.display_name,
                state=state,
                next_at=next_at,
                zone=task.schedule.timezone if task.schedule is not None else "",
                last=last,
                strip=list(reversed(runs)),
                running=running,
                queued=queued,
            )
        )
    return rows


@router.get("/")
async def overview(request: Request) -> Response:
    """Counts, every task with its state and recent outcomes, up next, recent activity."""
    session = current_session(request)
    runyard = runyard_of(request)
    now = runyard.clock()
    store = runyard.store
    names = [task.name for task in runyard.tasks()]

    def read() -> tuple[
        dict[str, int], dict[str, int], dict[str, int], dict[str, list[Run]], list[Run]
    ]:
        phases = reads.status_counts(store)
        day = reads.end_reason_counts_since(store, FAILURE_LIKE, now - timedelta(hours=24))
        week = reads.end_reason_counts_since(
            store, [EndReason.SUCCESS, *FAILURE_LIKE], now - timedelta(days=7)
        )
        recent = reads.recent_runs_of_tasks(store, names, STRIP_RUNS)
        activity = reads.recent_runs(store, 10)
        return phases, day, week, recent, activity

    phases, day, week, recent, activity = await asyncio.to_thread(read)
    judged = sum(week.values())
    rate = None if judged == 0 else 100.0 * week[EndReason.SUCCESS.value] / judged
    tasks = _task_rows(runyard, recent)
    # In memory, no query: the services' card counts those ready (healthy, or running).
    services = runyard.services.list()
    upcoming = sorted((row for row in tasks if row.next_at is not None), key=lambda r: r.next_at)  # type: ignore[arg-type, return-value]
    return page(
        request,
        "overview.html",
        context(
            request,
            session,
            title="Overview",
            running=phases[RunStatus.RUNNING.value],
            queued=phases[RunStatus.PENDING.value],
            failed_day=sum(day.values()),
            success_rate=rate,
            judged=judged,
            tasks=tasks,
            upcoming=upcoming[:5],
            activity=activity,
            services_total=len(services),
            services_ready=sum(1 for found in services if is_ready(*found)),
        ),
    )
