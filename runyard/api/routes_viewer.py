"""`/view/{runId}`: the run viewer a v3 trigger links to, opened with the run's secret.

The link's `password` is the capability: no login, and a wrong or missing
secret answers 404 exactly as an unknown run does. The page itself is a
static shell (`static/viewer.*`) holding no run data; its script loads the
run from `/state` and the log from `/log`, and inserts every value as text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from runyard.api.deps import ClosingDep, RunyardDep, SchemaBase
from runyard.api.node_proxy import log_stream_elsewhere
from runyard.api.routes_logs import follow_log
from runyard.api.sse import SSE_HEADERS
from runyard.app import Runyard
from runyard.domain.accounts import report_status
from runyard.domain.models import Run
from runyard.exceptions import NotFound

router = APIRouter(tags=["run viewer"], include_in_schema=False)

NOT_FOUND_MESSAGE = "Run not found."

# The page's URL carries the secret: keep it out of caches and Referer headers.
_SECRET_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_PAGE_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",  # the empty data: favicon spares a request to /favicon.ico
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_PAGE_HEADERS = {**_SECRET_HEADERS, "Content-Security-Policy": _PAGE_POLICY}

_NOT_FOUND_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Run not found</title></head>
<body>
<h1>Run not found</h1>
<p>This link is wrong, incomplete or no longer valid.</p>
</body>
</html>
"""

_STATIC_TYPES = {
    "viewer.css": "text/css; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
}


def _static(name: str) -> str:
    return resources.files("runyard.api").joinpath("static", name).read_text(encoding="utf-8")


# Read once, served from memory: name -> (media type, text).
_PAGE = _static("viewer.html")
_ASSETS = {name: (media_type, _static(name)) for name, media_type in _STATIC_TYPES.items()}

# Any run id is accepted: a malformed one is just another run that is not found.
RunIdPath = Annotated[str, Path(alias="runId", description="Run id")]
PasswordQuery = Annotated[str | None, Query(description="The run's viewer secret")]


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    stamp = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _not_found_json() -> JSONResponse:
    return JSONResponse(
        {"status": "error", "message": NOT_FOUND_MESSAGE}, status_code=404, headers=_SECRET_HEADERS
    )


async def _state(runyard: Runyard, run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "automation": runyard.v3.display_name(run.task_name),
        "task_name": run.task_name,
        "status": report_status(run),
        "phase": run.status.value,
        "end_reason": run.end_reason.value if run.end_reason is not None else None,
        "exit_code": run.exit_code,
        "created_at": _time(run.created_at),
        "start_at": _time(run.start_at),
        "end_at": _time(run.end_at),
        "duration_ms": run.duration_ms,
        "description": run.description,
        "input_data": await runyard.input_of(run) or [],
        "output_data": await runyard.v3.output_of(run),
    }


def _asset(name: str) -> Response:
    media_type, text = _ASSETS[name]
    return Response(text, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})


# Declared before `/view/{runId}/...`, though no run id ever reads "static".
@router.get("/view/static/viewer.js")
async def viewer_script() -> Response:
    """Return the viewer page's script."""
    return _asset("viewer.js")


@router.get("/view/static/viewer.css")
async def viewer_style() -> Response:
    """Return the viewer page's style sheet."""
    return _asset("viewer.css")


@router.get("/view/{runId}", response_class=HTMLResponse)
async def viewer_page(
    run_id: RunIdPath,
    runyard: RunyardDep,
    password: PasswordQuery = None,
    host: Annotated[str | None, Query(description="Ignored; the Stop button reads it")] = None,
    port: Annotated[str | None, Query(description="Ignored")] = None,
    task_id: Annotated[str | None, Query(alias="taskId", description="Ignored")] = None,
) -> HTMLResponse:
    """Return the live view of a run; 404 unless `password` is the run's secret."""
    try:
        await runyard.v3.viewer_run(run_id, password)
    except NotFound:
        return HTMLResponse(_NOT_FOUND_PAGE, status_code=404, headers=_PAGE_HEADERS)
    return HTMLResponse(_PAGE, headers=_PAGE_HEADERS)


@router.get("/view/{runId}/state")
async def viewer_state(
    run_id: RunIdPath, runyard: RunyardDep, password: PasswordQuery = None
) -> Response:
    """Return the run's status, timing, description, input and (live) output data."""
    try:
        run = await runyard.v3.viewer_run(run_id, password)
    except NotFound:
        return _not_found_json()
    return JSONResponse(await _state(runyard, run), headers=_SECRET_HEADERS)


@router.get("/view/{runId}/log", response_model=None)
async def viewer_log(
    request: Request,
    run_id: RunIdPath,
    runyard: RunyardDep,
    closing: ClosingDep,
    base: SchemaBase,
    password: PasswordQuery = None,
    start: Annotated[int, Query(alias="from", description="First line number", ge=0)] = 0,
    last_event_id: Annotated[
        int | None,
        Header(alias="Last-Event-ID", description="Resume after this line number", ge=0),
    ] = None,
) -> Response:
    """Follow the run's log (SSE): `line` events, then `done` with the ended run."""
    try:
        # Checked before streaming starts: a bad secret gets a plain 404.
        run = await runyard.v3.viewer_run(run_id, password)
    except NotFound:
        return _not_found_json()
    first = last_event_id + 1 if last_event_id is not None else start
    headers = {**SSE_HEADERS, **_SECRET_HEADERS}
    # A run of another node: its log stream, as that node's API gives it.
    elsewhere = await log_stream_elsewhere(request, runyard, run, first, closing, headers)
    if elsewhere is not None:
        return elsewhere
    return StreamingResponse(
        follow_log(runyard, run, first, closing, base),
        media_type="text/event-stream",
        headers=headers,
    )
