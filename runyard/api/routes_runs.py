"""Runs across tasks: list, detail, output data, stop."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from runyard.api import bodies, schemas
from runyard.api.deps import RunyardDep, SchemaBase, schema_url
from runyard.api.errors import problem_responses
from runyard.api.node_proxy import is_forwarded
from runyard.api.params import RunIdPath, run_query
from runyard.domain.queries import RunQuery

router = APIRouter(tags=["runs"], responses=problem_responses(400, 401, 404, 422, 500))


@router.get("/api/runs", summary="List runs", response_model_exclude_none=True)
async def list_runs(
    query: Annotated[RunQuery, Depends(run_query)], runyard: RunyardDep, base: SchemaBase
) -> schemas.RunsResponseBody:
    """Return one page of runs of every task (`task_name` filters on one) and the total."""
    runs, total = await runyard.list_runs(query)
    return schemas.RunsResponseBody(
        schema_=schema_url(base, "RunsResponseBody"),
        runs=[bodies.run_body(run, base) for run in runs],
        total=total,
    )


@router.get("/api/runs/{runId}", summary="Get a run", response_model_exclude_none=True)
async def get_run(run_id: RunIdPath, runyard: RunyardDep, base: SchemaBase) -> schemas.Run:
    """Return one run, with its input data when it has some."""
    return bodies.run_body(await runyard.run_detail(run_id), base, detail=True)


@router.post(
    "/api/runs/{runId}/stop",
    summary="Stop a run",
    status_code=202,
    response_model_exclude_none=True,
    responses={
        200: {"model": schemas.Run, "description": "The run was waiting; it ended as stopped"},
        **problem_responses(409, 503),
    },
)
async def stop_run(
    request: Request, run_id: RunIdPath, runyard: RunyardDep, base: SchemaBase, response: Response
) -> schemas.Run:
    """Stop a run.

    A running run gets its task's stop signal, then SIGKILL after
    graceful_stop: the answer is 202 with the run as it is now. A run still
    waiting ends as stopped at once: 200 with the ended run. A run that had
    already ended is a 409. A run of another node is stopped by that node
    (503 when it cannot be reached).
    """
    run = await runyard.stop_run(run_id, forward=not is_forwarded(request))
    if not run.is_active:
        response.status_code = 200
    return bodies.run_body(run, base)


@router.get(
    "/api/runs/{runId}/output",
    summary="Get a run's output data",
    responses=problem_responses(503),
)
async def get_output(
    request: Request, run_id: RunIdPath, runyard: RunyardDep, base: SchemaBase
) -> schemas.RunOutput:
    """Return the output data of a run: what it wrote so far while it runs, all once it ended.

    A running run of another node is asked of that node (503 when it cannot be reached).
    """
    run = await runyard.get_run(run_id)
    output = await runyard.output_of(run, forward=not is_forwarded(request))
    return schemas.RunOutput(
        schema_=schema_url(base, "RunOutput"),
        run_id=run.id,
        output_data=output,
        finished=not run.is_active,
    )
