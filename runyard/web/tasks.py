"""A task's page (definition, schedule, duration chart, runs) and its actions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from runyard.domain import words
from runyard.domain.models import Run, RunStatus, TriggeredBy
from runyard.exceptions import InvalidInput, NotFound, RunyardError
from runyard.store import dashboard as reads
from runyard.web.pages import (
    TaskNamePath,
    context,
    current_session,
    form_value,
    not_found,
    read_form,
    runyard_of,
    see_other,
)
from runyard.web.render import page

router = APIRouter(include_in_schema=False)

CHART_RUNS = 100  # runs in a task's duration chart


@router.get("/tasks/{taskName}")
async def task_page(request: Request, task_name: TaskNamePath) -> Response:
    """A task's definition, schedule, chart of recent runs, its runs, pause/resume, Run now."""
    session = current_session(request)
    runyard = runyard_of(request)
    try:
        task = runyard.task(task_name)
    except NotFound:
        return not_found(request, session, f"No task is called {task_name}.")
    now = runyard.clock()
    paused, next_at = runyard.schedule_state(task.name)
    running, queued = runyard.task_counts(task.name)
    recent = (
        await asyncio.to_thread(reads.recent_runs_of_tasks, runyard.store, [task.name], CHART_RUNS)
    )[task.name]
    ticks = words.next_ticks(task.schedule, now, 5) if task.schedule is not None else []
    return page(
        request,
        "task.html",
        context(
            request,
            session,
            title=f"Task {task.name}",
            task=task,
            env=words.masked_env(task.env),
            paused=paused,
            next_at=next_at,
            running=running,
            queued=queued,
            schedule_words=words.schedule_words(task.schedule) if task.schedule else None,
            ticks=ticks,
            chart=_chart(list(reversed(recent))),
            runs=recent[:20],
        ),
    )


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    tone: str
    label: str
    href: str


def _chart(runs: list[Run]) -> dict[str, Any]:
    """Return the bars of the duration chart: one per ended run, oldest left, height ~ duration."""
    from runyard.web.render import outcome, tone

    ended = [run for run in runs if run.status is RunStatus.ENDED]
    width, height, gap = 6.0, 100.0, 2.0
    longest = max((run.duration_ms or 0 for run in ended), default=0) or 1
    # Room for CHART_RUNS bars whatever the count, newest at the right edge:
    # bars keep their width as history grows.
    first = CHART_RUNS - len(ended)
    bars = []
    for index, run in enumerate(ended):
        value = run.duration_ms or 0
        tall = max(2.0, height * value / longest)
        bars.append(
            Bar(
                x=(first + index) * (width + gap),
                y=height - tall,
                height=tall,
                tone=tone(run),
                label=f"{outcome(run)}, {words.duration(run.duration_ms)}",
                href=f"/runs/{run.id}",
            )
        )
    return {
        "bars": bars,
        "width": CHART_RUNS * (width + gap),
        "height": height,
        "bar_width": width,
        "longest": words.duration(longest if ended else None),
    }


def _task_action_target(task_name: str) -> str:
    return f"/tasks/{task_name}"


@router.post("/tasks/{taskName}/pause")
async def task_pause(request: Request, task_name: TaskNamePath) -> Response:
    """Pause the task's schedule."""
    return await _set_paused(request, task_name, True)


@router.post("/tasks/{taskName}/resume")
async def task_resume(request: Request, task_name: TaskNamePath) -> Response:
    """Resume the task's schedule."""
    return await _set_paused(request, task_name, False)


async def _set_paused(request: Request, task_name: str, paused: bool) -> Response:
    session = current_session(request)
    await read_form(request, session)
    try:
        await runyard_of(request).set_paused(task_name, paused)
        session.flashes.append(("ok", "Schedule paused." if paused else "Schedule resumed."))
    except RunyardError as error:
        session.flashes.append(("error", str(error)))
    return see_other(_task_action_target(task_name))


@router.post("/tasks/{taskName}/run")
async def task_run(request: Request, task_name: TaskNamePath) -> Response:
    """Run now, with the params of the form (declared params only; required ones enforced)."""
    session = current_session(request)
    form = await read_form(request, session)
    runyard = runyard_of(request)
    try:
        task = runyard.task(task_name)
        # An empty optional field means "the default"; a required one must be filled.
        params = {
            spec.name: value
            for spec in task.params
            if (value := form_value(form, f"param.{spec.name}"))
        }
        missing = [spec.name for spec in task.params if spec.required and not params.get(spec.name)]
        if missing:
            raise InvalidInput(f"params.{missing[0]}", f"is required: fill in {', '.join(missing)}")
        runs = await runyard.trigger(task.name, params, TriggeredBy.API)
    except RunyardError as error:
        session.flashes.append(("error", f"Not started: {error}"))
        return see_other(_task_action_target(task_name))
    session.flashes.append(("ok", f"Started run {runs[0].id}."))
    return see_other(f"/runs/{runs[0].id}")
