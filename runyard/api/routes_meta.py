"""Public routes: health and the JSON Schemas that `$schema` URLs point at."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from runyard import __version__
from runyard.api import schemas
from runyard.api.deps import RunyardDep, SchemaBase, schema_url
from runyard.api.errors import problem_responses
from runyard.engine.core import utc_now

router = APIRouter(tags=["meta"])

_JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@router.get("/health", summary="Health check")
async def health(runyard: RunyardDep, base: SchemaBase) -> schemas.Health:
    """Answer that the daemon is up, with its version and uptime."""
    uptime = (utc_now() - runyard.started_at).total_seconds()
    return schemas.Health(
        schema_=schema_url(base, "Health"),
        status="ok",
        version=__version__,
        uptime_seconds=round(max(uptime, 0.0), 3),
    )


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
