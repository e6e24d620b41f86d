"""Routes about the daemon itself: health, metrics, and the JSON Schemas `$schema` URLs name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from runyard import __version__
from runyard.api import schemas
from runyard.api.deps import RunyardDep, SchemaBase, schema_url
from runyard.api.errors import problem_responses, retry_after_header
from runyard.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["meta"])

_JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
UNHEALTHY_RETRY_AFTER_SECONDS = 5


@router.get(
    "/health",
    summary="Health check",
    responses={503: {"model": schemas.Health, "description": "Runs cannot be recorded now"}},
)
async def health(runyard: RunyardDep, base: SchemaBase, response: Response) -> schemas.Health:
    """Answer whether the daemon can record runs (its database answers, its disk has room).

    503 with the reason while it cannot; it recovers by itself.
    """
    report = await runyard.engine.health()
    uptime = (runyard.clock() - runyard.started_at).total_seconds()
    if not report.healthy:
        response.status_code = 503
        response.headers.update(retry_after_header(UNHEALTHY_RETRY_AFTER_SECONDS))
    return schemas.Health(
        schema_=schema_url(base, "Health"),
        status="ok" if report.healthy else "unavailable",
        version=__version__,
        uptime_seconds=round(max(uptime, 0.0), 3),
        reason=report.reason,
        checks=report.checks,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "The metrics in Prometheus text format",
        },
        **problem_responses(401, 500),
    },
)
async def metrics(runyard: RunyardDep) -> Response:
    """Runs, durations, schedule lag, v3 triggers and store writes, for Prometheus to scrape.

    Needs the bearer token like the rest of the API (Prometheus sends it with
    `authorization`), unless the config says `[metrics] public = true`.
    """
    return Response(await runyard.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/schemas/{name}.json",
    summary="Get the JSON Schema of a body",
    responses=problem_responses(404, 500),
)
async def json_schema(name: str, base: SchemaBase) -> dict[str, Any]:
    """Return the JSON Schema of the response or error body called `name`."""
    model = schemas.SCHEMAS.get(name)
    if model is None:
        known = ", ".join(sorted(schemas.SCHEMAS))
        raise HTTPException(404, f"No schema named {name!r}; known: {known}.")
    document = model.model_json_schema(by_alias=True, mode="serialization")
    return {"$schema": _JSON_SCHEMA_DIALECT, "$id": schema_url(base, name), **document}
