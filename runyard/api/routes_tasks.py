"""Tasks: list, describe, trigger, pause and resume, and the spec's per-task run list."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request

from runyard.api import bodies, schemas
from runyard.api.deps import ClosingDep, RunyardDep, SchemaBase, schema_url
from runyard.api.errors import problem_responses
from runyard.api.params import TaskNamePath, run_query
from runyard.app import Runyard
from runyard.body_parser import STAGED_INPUT_KEY
from runyard.domain.models import TaskDefinition
from runyard.domain.queries import RunQuery
from runyard.engine.waiting import Closed, first_of

router = APIRouter(tags=["tasks"], responses=problem_responses(400, 401, 404, 422, 500))


@router.get("/api/tasks", summary="List tasks")
async def list_tasks(runyard: RunyardDep, base: SchemaBase) -> schemas.TasksResponseBody:
    """Return every configured task, sorted by name, with its live run counts."""
    tasks = [_task_body(runyard, task, base) for task in runyard.tasks()]
    return schemas.TasksResponseBody(schema_=schema_url(base, "TasksResponseBody"), tasks=tasks)


@router.get("/api/tasks/{taskName}", summary="Get a task")
async def get_task(task_name: TaskNamePath, runyard: RunyardDep, base: SchemaBase) -> schemas.Task:
    """Return one task as configured, with its live run counts."""
    return _task_body(runyard, runyard.task(task_name), base)


@router.post("/api/tasks/{taskName}/pause", summary="Pause a task's schedule")
async def pause_task(
    task_name: TaskNamePath, runyard: RunyardDep, base: SchemaBase
) -> schemas.Task:
    """Stop the task's schedule from firing until resumed; manual triggers still run.

    The pause survives daemon restarts. Pausing a paused task changes nothing.
    """
    await runyard.set_paused(task_name, True)
    return _task_body(runyard, runyard.task(task_name), base)


@router.post("/api/tasks/{taskName}/resume", summary="Resume a task's schedule")
async def resume_task(
    task_name: TaskNamePath, runyard: RunyardDep, base: SchemaBase
) -> schemas.Task:
    """Let the task's schedule fire again, from now on: ticks inside the pause are not run."""
    await runyard.set_paused(task_name, False)
    return _task_body(runyard, runyard.task(task_name), base)


def _task_body(runyard: Runyard, task: TaskDefinition, base: str) -> schemas.Task:
    return bodies.task_body(
        task, runyard.task_counts(task.name), runyard.schedule_state(task.name), base
    )


@router.post(
    "/api/tasks/{taskName}/run",
    summary="Trigger a run",
    status_code=201,
    response_model_exclude_none=True,
    responses=problem_responses(429, 503, 507),
)
async def trigger_task(
    request: Request,
    task_name: TaskNamePath,
    runyard: RunyardDep,
    closing: ClosingDep,
    base: SchemaBase,
    body: Annotated[schemas.TriggerRequest | None, Body()] = None,
    wait: Annotated[bool, Query(description="Wait for the run to end before answering")] = False,
    wait_timeout: Annotated[
        float,
        Query(
            description="Seconds to wait when wait=true; the run is answered as it is then",
            ge=1,
            le=3600,
        ),
    ] = 60,
) -> schemas.Run:
    """Start a run (queued if the task is busy) and answer it with 201.

    For a task with replicas > 1, one trigger makes one run per replica; the
    answer is the first replica's run (replica_index 0) and the others are
    listed by `GET /api/tasks/{taskName}/runs`. A trigger whose input data
    would pass the task's (or account's) `max_queued_input` is refused with
    429 and not recorded.
    """
    runs = await runyard.trigger(
        task_name,
        body.params if body is not None else {},
        data=body.data if body is not None else None,
        # A large body's data, parsed off the event loop (api/uploads.py).
        staged=request.scope.get(STAGED_INPUT_KEY),
    )
    run = runs[0]
    if wait and run.is_active:
        try:
            outcome = await first_of(
                {"ended": runyard.wait_for_end(run.id, wait_timeout)},
                closing,
                timeout=wait_timeout + 1,
            )
        except Closed:
            outcome = None  # shutting down: answer the run as it is instead of holding the server
        ended = outcome[1] if outcome is not None else None
        run = ended if ended is not None else await runyard.get_run(run.id)
    return bodies.run_body(run, base)


@router.get(
    "/api/tasks/{taskName}/runs",
    summary="List runs for a task",
    response_model_exclude_none=True,
)
async def list_task_runs(
    task_name: TaskNamePath,
    query: Annotated[RunQuery, Depends(run_query)],
    runyard: RunyardDep,
    base: SchemaBase,
) -> schemas.RunsResponseBody:
    """Return one page of the task's runs and the total that match.

    A `task_name` query parameter is ANDed with the path: if it names another
    task the answer is empty (total 0), not the other task's runs.
    """
    mismatch = query.task_name is not None and query.task_name != task_name
    runs, total = await runyard.list_runs(dataclasses.replace(query, task_name=task_name))
    if mismatch:
        runs, total = [], 0
    return schemas.RunsResponseBody(
        schema_=schema_url(base, "RunsResponseBody"),
        runs=[bodies.run_body(run, base) for run in runs],
        total=total,
    )
