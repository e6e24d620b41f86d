"""The run list, one run's page, its actions (stop, run again, bulk) and the live streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from runyard.api.node_proxy import log_elsewhere, log_stream_elsewhere
from runyard.api.params import parse_status
from runyard.api.routes_events import event_lines
from runyard.api.routes_logs import follow_log
from runyard.api.sse import SSE_HEADERS
from runyard.app import Runyard
from runyard.domain.models import EndReason, Run, RunKind, RunStatus, TriggeredBy
from runyard.domain.queries import DEFAULT_LIMIT, MAX_LIMIT, RunQuery, SortDirection, SortField
from runyard.exceptions import (
    InvalidInput,
    NodeUnreachable,
    NotFound,
    RunAlreadyEnded,
    RunyardError,
)
from runyard.store import dashboard as reads
from runyard.store.logs import iter_raw_text
from runyard.web.pages import (
    RunIdPath,
    bounded_int,
    closing_of,
    context,
    current_session,
    form_value,
    not_found,
    read_form,
    runyard_of,
    see_other,
)
from runyard.web.render import HEADERS, page
from runyard.web.session import (
    safe_next,
)

router = APIRouter(include_in_schema=False)

BULK_MAX = 200  # runs one bulk action may name
LOG_LINES_KEPT = 2000  # log lines the run page keeps (log.js MAX_LINES)
COUNT_CAP = 10_000  # runs counted at most for filters run_counts cannot answer


def _day(value: str, name: str) -> tuple[datetime | None, str | None]:
    """Read a YYYY-MM-DD date (UTC midnight); (None, problem) when it is not one."""
    if not value:
        return None, None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC), None
    except ValueError:
        return None, f"{name}: must be a date as YYYY-MM-DD, got {value[:40]!r}"


@router.get("/runs")
async def runs_page(request: Request) -> Response:
    """The run list with the filters, sort, search and paging of GET /api/runs."""
    session = current_session(request)
    runyard = runyard_of(request)
    given = request.query_params
    problems: list[str] = []
    status = given.get("status", "")
    try:
        run_status, end_reason = parse_status(status)
    except InvalidInput as error:
        problems.append(f"status: {error.message}")
        run_status, end_reason, status = None, None, ""
    sort_field = given.get("sort_field", "") or SortField.CREATED_AT.value
    if sort_field not in SortField.__members__.values():
        problems.append(f"sort_field: must be one of {', '.join(SortField)}")
        sort_field = SortField.CREATED_AT.value
    direction = given.get("sort_direction", "") or SortDirection.DESC.value
    if direction not in SortDirection.__members__.values():
        problems.append("sort_direction: must be asc or desc")
        direction = SortDirection.DESC.value
    limit = bounded_int(given.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = bounded_int(given.get("offset"), 0, 0, 10**12)
    task_name = given.get("task_name", "").strip()
    search = given.get("search", "").strip()
    query = RunQuery(
        task_name=task_name or None,
        status=run_status,
        end_reason=end_reason,
        search=search or None,
        sort_field=SortField(sort_field),
        sort_direction=SortDirection(direction),
        limit=limit,
        offset=offset,
    )
    triggered_by = given.get("triggered_by", "")
    if triggered_by and triggered_by not in TriggeredBy.__members__.values():
        problems.append(f"triggered_by: must be one of {', '.join(TriggeredBy)}")
        triggered_by = ""
    created_from, created_to = given.get("created_from", ""), given.get("created_to", "")
    start, problem = _day(created_from, "created_from")
    if problem:
        problems.append(problem)
        created_from = ""
    end, problem = _day(created_to, "created_to")
    if problem:
        problems.append(problem)
        created_to = ""
    capped = False
    try:
        if triggered_by or start or end:
            runs, total, capped = await asyncio.to_thread(
                reads.filtered_runs,
                runyard.store,
                query,
                triggered_by=triggered_by or None,
                created_from=start,
                created_before=end + timedelta(days=1) if end else None,
                count_cap=COUNT_CAP,
            )
        else:
            runs, total = await runyard.list_runs(query)
    except (NotFound, InvalidInput) as error:
        problems.append(str(error))
        runs, total = [], 0
    filters = {
        "status": status,
        "task_name": task_name,
        "triggered_by": triggered_by,
        "created_from": created_from,
        "created_to": created_to,
        "search": search,
        "sort_field": sort_field,
        "sort_direction": direction,
        "limit": str(limit),
    }

    def link(**changes: object) -> str:
        merged = {**filters, "offset": str(offset), **{k: str(v) for k, v in changes.items()}}
        defaults = {"offset": "0", "limit": str(DEFAULT_LIMIT), "sort_field": "created_at"}
        defaults["sort_direction"] = "desc"
        kept = {k: v for k, v in merged.items() if v and defaults.get(k) != v}
        return "/runs" + ("?" + urlencode(kept) if kept else "")

    return page(
        request,
        "runs.html",
        context(
            request,
            session,
            title="Runs",
            runs=runs,
            total=total,
            capped=capped,
            triggers=list(TriggeredBy),
            filters=filters,
            offset=offset,
            limit=limit,
            problems=problems,
            link=link,
            statuses=[*RunStatus, *EndReason],
            sort_fields=list(SortField),
            task_names=[task.name for task in runyard.tasks()],
        ),
    )


async def _rerun(runyard: Runyard, run: Run) -> list[Run]:
    if run.kind is RunKind.SERVICE:
        raise RunyardError(
            f"it is a lifetime of service {run.task_name}: "
            "a service is started or restarted, not run again"
        )
    # Input data kept in a file is not in `run`: read it (this run only).
    return await runyard.trigger(
        run.task_name, dict(run.params), TriggeredBy.API, data=await runyard.input_of(run)
    )


@router.post("/runs/bulk")
async def runs_bulk(request: Request) -> Response:
    """Stop or run again every selected run; say what happened to each."""
    session = current_session(request)
    form = await read_form(request, session)
    runyard = runyard_of(request)
    action = form_value(form, "action")
    ids = list(dict.fromkeys(form.get("run", [])))[:BULK_MAX]
    back = safe_next(form_value(form, "back", "/runs"))
    if action not in ("stop", "rerun"):
        session.flashes.append(("error", "Choose Stop or Run again."))
        return see_other(back)
    if not ids:
        session.flashes.append(("error", "Select at least one run first."))
        return see_other(back)
    done, failed = 0, []
    for run_id in ids:
        try:
            if action == "stop":
                await runyard.stop_run(run_id)
            else:
                await _rerun(runyard, await runyard.get_run(run_id))
            done += 1
        except RunAlreadyEnded:
            failed.append(f"{run_id} had already ended")
        except RunyardError as error:
            failed.append(f"{run_id}: {error}")
    verb = "Stopped" if action == "stop" else "Ran again"
    if done:
        session.flashes.append(("ok", f"{verb}: {done} run{'s' if done != 1 else ''}."))
    for problem in failed[:10]:
        session.flashes.append(("error", problem))
    return see_other(back)


@router.get("/runs/{runId}")
async def run_page(request: Request, run_id: RunIdPath) -> Response:
    """Everything about one run, its live log, stop and run again."""
    session = current_session(request)
    runyard = runyard_of(request)
    try:
        run = await runyard.run_detail(run_id)  # with input data kept in a file
    except NotFound:
        return not_found(request, session, f"No run has the id {run_id}.")
    earlier: list[Run] = []
    parent_id = run.retry_of_run_id
    while parent_id is not None and len(earlier) < 20:
        parent = await asyncio.to_thread(runyard.store.get_run, parent_id)
        if parent is None:
            break
        earlier.append(parent)
        parent_id = parent.retry_of_run_id
    later = await asyncio.to_thread(reads.retries_of, runyard.store, run.id)
    # The page keeps the last LOG_LINES_KEPT lines: start the stream there.
    # (Asked of the run's node when its log is on another node's disk.)
    lines = await runyard.log_line_count(run)
    log_from = max(0, lines - LOG_LINES_KEPT)
    try:
        output = await runyard.output_of(run)
    except NodeUnreachable:
        output = run.output_data or {}  # the log view says which node cannot be reached
    try:
        task = runyard.task(run.task_name)
    except NotFound:
        task = None
    return page(
        request,
        "run.html",
        context(
            request,
            session,
            title=f"Run {run.id}",
            run=run,
            task=task,
            earlier=list(reversed(earlier)),
            later=later,
            output=output or {},
            log_from=log_from,
        ),
    )


@router.post("/runs/{runId}/stop")
async def run_stop(request: Request, run_id: RunIdPath) -> Response:
    """Stop a run (the page asks for confirmation first)."""
    session = current_session(request)
    await read_form(request, session)
    runyard = runyard_of(request)
    try:
        await runyard.stop_run(run_id)
        session.flashes.append(("ok", "Stop requested: the run is being stopped."))
    except RunAlreadyEnded:
        session.flashes.append(("error", "This run had already ended."))
    except RunyardError as error:
        session.flashes.append(("error", str(error)))
    return see_other(f"/runs/{run_id}")


@router.post("/runs/{runId}/rerun")
async def run_again(request: Request, run_id: RunIdPath) -> Response:
    """Trigger the run's task again with the same params and input data."""
    session = current_session(request)
    await read_form(request, session)
    runyard = runyard_of(request)
    try:
        runs = await _rerun(runyard, await runyard.get_run(run_id))
    except RunyardError as error:
        session.flashes.append(("error", f"Could not run again: {error}"))
        return see_other(f"/runs/{run_id}")
    session.flashes.append(("ok", f"Ran again as {runs[0].id}."))
    return see_other(f"/runs/{runs[0].id}")


@router.get("/runs/{runId}/log.txt")
async def run_log_download(request: Request, run_id: RunIdPath) -> Response:
    """The whole log as plain text, as a download."""
    current_session(request)
    runyard = runyard_of(request)
    try:
        run = await runyard.get_run(run_id)
    except NotFound:
        return Response("Run not found.", status_code=404, media_type="text/plain")
    headers = {**HEADERS, "Content-Disposition": f'attachment; filename="runyard-{run.id}.log"'}
    # A run of another node: its raw log, as that node's API gives it.
    elsewhere = await log_elsewhere(
        request,
        runyard,
        run,
        path=f"/api/runs/{run.id}/log/raw",
        query="",
        headers={**headers, "Content-Type": "text/plain; charset=utf-8"},
    )
    if elsewhere is not None:
        return elsewhere
    return StreamingResponse(
        iter_raw_text(runyard.log_path(run.id)),
        media_type="text/plain; charset=utf-8",
        headers=headers,
    )


@router.get("/runs/{runId}/log/live")
async def run_log_stream(request: Request, run_id: RunIdPath) -> Response:
    """The run's log as it is written (SSE): the API's log stream, opened by the session."""
    current_session(request, stream=True)
    runyard = runyard_of(request)
    try:
        run = await runyard.get_run(run_id)
    except NotFound:
        return Response("Run not found.", status_code=404, media_type="text/plain")
    last = request.headers.get("last-event-id", "")
    given = request.query_params.get("from", "")
    first = int(last) + 1 if last.isdigit() else int(given) if given.isdigit() else 0
    # A run of another node: its log stream, as that node's API gives it.
    elsewhere = await log_stream_elsewhere(
        request, runyard, run, first, closing_of(request), {**SSE_HEADERS, **HEADERS}
    )
    if elsewhere is not None:
        return elsewhere
    return StreamingResponse(
        follow_log(runyard, run, first, closing_of(request), str(request.base_url)),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **HEADERS},
    )


@router.get("/events/live")
async def events_stream(request: Request) -> Response:
    """Run events (SSE) for the pages' live updates: the API's event feed, opened by the session."""
    current_session(request, stream=True)
    runyard = runyard_of(request)
    last = request.headers.get("last-event-id", "")
    after = int(last) if last.isdigit() else None
    stream: AsyncIterator[str] = event_lines(runyard.engine.events, after, closing_of(request))
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={**SSE_HEADERS, **HEADERS}
    )
