"""The dashboard's pages and forms: HTTP in, service calls out, templates back.

Every page needs a signed-in session (`/login`); every form that changes
something carries the session's CSRF token. No business rule lives here: the
pages call the same Runyard methods as the API, and read through
`runyard.store.dashboard`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from runyard import __version__
from runyard.api.deps import Closing
from runyard.api.params import parse_status
from runyard.api.routes_events import _events
from runyard.api.routes_keys import key_admin
from runyard.api.routes_logs import follow_log
from runyard.api.sse import SSE_HEADERS
from runyard.app import Runyard
from runyard.domain import words
from runyard.domain.models import FAILURE_LIKE, EndReason, Run, RunStatus, TriggeredBy
from runyard.domain.queries import DEFAULT_LIMIT, MAX_LIMIT, RunQuery, SortDirection, SortField
from runyard.exceptions import (
    ConfigError,
    InvalidInput,
    NotFound,
    RunAlreadyEnded,
    RunyardError,
)
from runyard.store import dashboard as reads
from runyard.store.logs import count_lines, iter_raw_text
from runyard.web.render import HEADERS, page, static_text
from runyard.web.session import (
    COOKIE,
    LOGIN_COOKIE,
    Session,
    Sessions,
    safe_next,
    tokens_match,
)

router = APIRouter(include_in_schema=False)

MAX_FORM_BYTES = 64 * 1024
STRIP_RUNS = 20  # outcomes in a task's strip on the overview
CHART_RUNS = 100  # runs in a task's duration chart
BULK_MAX = 200  # runs one bulk action may name
LOG_LINES_KEPT = 2000  # log lines the run page keeps (log.js MAX_LINES)
COUNT_CAP = 10_000  # runs counted at most for filters run_counts cannot answer

_STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "log.js": "text/javascript; charset=utf-8",
}
_ASSETS = {name: (media, static_text(name)) for name, media in _STATIC.items()}

TaskNamePath = Annotated[str, Path(alias="taskName", min_length=1, max_length=100)]
RunIdPath = Annotated[str, Path(alias="runId", min_length=1, max_length=100)]
KeyIdPath = Annotated[str, Path(alias="keyId", min_length=1, max_length=100)]


class SignInRequired(Exception):
    """No session: pages redirect to /login?next=...; streams answer 401."""

    def __init__(self, next_path: str, stream: bool = False) -> None:
        self.next_path = next_path
        self.stream = stream


class BadForm(Exception):
    """A form without the session's CSRF token (or unreadable): 403."""


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def _runyard(request: Request) -> Runyard:
    runyard: Runyard = request.app.state.runyard
    return runyard


def _closing(request: Request) -> Closing:
    closing: Closing = request.app.state.closing
    return closing


def _session(request: Request, *, stream: bool = False) -> Session:
    session = sessions_of(request).get(request.cookies.get(COOKIE))
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = request.headers.get("x-runyard-page") or "/"
        raise SignInRequired(safe_next(target), stream)
    return session


async def _form(request: Request, session: Session | None) -> dict[str, list[str]]:
    """Read an urlencoded form and check its CSRF token against the session's."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise BadForm("The form is too large.")
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadForm("The form is not UTF-8 text.") from None
    if session is not None:
        given = (form.get("csrf") or [""])[0]
        if not tokens_match(given, session.csrf):
            raise BadForm("This form has expired or did not come from this dashboard.")
    return form


def _one(form: dict[str, list[str]], name: str, default: str = "") -> str:
    values = form.get(name)
    return values[0] if values else default


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=HEADERS)


def _context(request: Request, session: Session | None, **values: Any) -> dict[str, Any]:
    runyard = _runyard(request)
    flashes: list[tuple[str, str]] = []
    new_key = None
    if session is not None:
        flashes, session.flashes = session.flashes, []
        new_key, session.new_key = session.new_key, None
    return {
        "csrf": session.csrf if session is not None else "",
        "signed_in": session is not None,
        "flashes": flashes,
        "new_key": new_key,
        "now": runyard.clock(),
        **values,
    }


# ----- static files ------------------------------------------------------------------


@router.get("/ui/static/{asset}")
async def dashboard_asset(asset: str) -> Response:
    """Return a script or style sheet of the dashboard (public: the same for everyone)."""
    found = _ASSETS.get(asset)
    if found is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    media, text = found
    return Response(
        text,
        media_type=media,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


# ----- sign in and out ---------------------------------------------------------------


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    """The sign-in form: the daemon's API token opens a session."""
    if sessions_of(request).get(request.cookies.get(COOKIE)) is not None:
        return _see_other(safe_next(next))
    return _login_form(request, safe_next(next), None, 200)


def _login_form(
    request: Request,
    next_path: str,
    error: str | None,
    status: int,
    headers: dict[str, str] | None = None,
) -> Response:
    form_token = request.cookies.get(LOGIN_COOKIE) or os.urandom(24).hex()
    response = page(
        request,
        "login.html",
        _context(
            request, None, title="Sign in", next=next_path, error=error, login_token=form_token
        ),
        status_code=status,
        headers=headers,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        form_token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/login",
    )
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token; open a session, or count a failure (5 in 5 min per address: 429)."""
    sessions = sessions_of(request)
    address = request.client.host if request.client else "unknown"
    form = await _form(request, None)
    next_path = safe_next(_one(form, "next", "/"))
    wait = sessions.sign_in_retry_after(address)
    if wait > 0:
        return _login_form(
            request,
            next_path,
            f"Too many failed sign-ins from your address: try again in {int(wait) + 1} s.",
            429,
            {"Retry-After": str(int(wait) + 1)},
        )
    cookie_token = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie_token or not tokens_match(_one(form, "login_token"), cookie_token):
        return _login_form(request, next_path, "The sign-in form expired: please try again.", 403)
    token = _one(form, "token").strip()
    if not token or not tokens_match(token, _runyard(request).token):
        sessions.count_failure(address)
        return _login_form(request, next_path, "That token is not this daemon's API token.", 401)
    session = sessions.create()
    response = _see_other(next_path)
    response.set_cookie(
        COOKIE, session.id, httponly=True, samesite="strict", secure=_secure(request), path="/"
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (its CSRF token is required: no one signs you out from elsewhere)."""
    session = _session(request)
    await _form(request, session)
    sessions_of(request).end(session.id)
    response = _see_other("/login")
    response.delete_cookie(COOKIE, path="/")
    return response


# ----- overview ----------------------------------------------------------------------


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
    session = _session(request)
    runyard = _runyard(request)
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
    upcoming = sorted((row for row in tasks if row.next_at is not None), key=lambda r: r.next_at)  # type: ignore[arg-type, return-value]
    return page(
        request,
        "overview.html",
        _context(
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
        ),
    )


# ----- runs --------------------------------------------------------------------------


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(value) if value not in (None, "") else default
    except ValueError:
        return default
    return max(low, min(high, number))


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
    session = _session(request)
    runyard = _runyard(request)
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
    limit = _int(given.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int(given.get("offset"), 0, 0, 10**12)
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
        _context(
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
    # Input data kept in a file is not in `run`: read it (this run only).
    return await runyard.trigger(
        run.task_name, dict(run.params), TriggeredBy.API, data=await runyard.input_of(run)
    )


@router.post("/runs/bulk")
async def runs_bulk(request: Request) -> Response:
    """Stop or run again every selected run; say what happened to each."""
    session = _session(request)
    form = await _form(request, session)
    runyard = _runyard(request)
    action = _one(form, "action")
    ids = list(dict.fromkeys(form.get("run", [])))[:BULK_MAX]
    back = safe_next(_one(form, "back", "/runs"))
    if action not in ("stop", "rerun"):
        session.flashes.append(("error", "Choose Stop or Run again."))
        return _see_other(back)
    if not ids:
        session.flashes.append(("error", "Select at least one run first."))
        return _see_other(back)
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
    return _see_other(back)


@router.get("/runs/{runId}")
async def run_page(request: Request, run_id: RunIdPath) -> Response:
    """Everything about one run, its live log, stop and run again."""
    session = _session(request)
    runyard = _runyard(request)
    try:
        run = await runyard.run_detail(run_id)  # with input data kept in a file
    except NotFound:
        return _not_found(request, session, f"No run has the id {run_id}.")
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
    lines = await asyncio.to_thread(count_lines, runyard.log_path(run.id))
    log_from = max(0, lines - LOG_LINES_KEPT)
    output = run.output_data
    if run.is_active:
        output = await runyard.engine.live_output(run.id) or output
    try:
        task = runyard.task(run.task_name)
    except NotFound:
        task = None
    return page(
        request,
        "run.html",
        _context(
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
    session = _session(request)
    await _form(request, session)
    runyard = _runyard(request)
    try:
        await runyard.stop_run(run_id)
        session.flashes.append(("ok", "Stop requested: the run is being stopped."))
    except RunAlreadyEnded:
        session.flashes.append(("error", "This run had already ended."))
    except RunyardError as error:
        session.flashes.append(("error", str(error)))
    return _see_other(f"/runs/{run_id}")


@router.post("/runs/{runId}/rerun")
async def run_again(request: Request, run_id: RunIdPath) -> Response:
    """Trigger the run's task again with the same params and input data."""
    session = _session(request)
    await _form(request, session)
    runyard = _runyard(request)
    try:
        runs = await _rerun(runyard, await runyard.get_run(run_id))
    except RunyardError as error:
        session.flashes.append(("error", f"Could not run again: {error}"))
        return _see_other(f"/runs/{run_id}")
    session.flashes.append(("ok", f"Ran again as {runs[0].id}."))
    return _see_other(f"/runs/{runs[0].id}")


@router.get("/runs/{runId}/log.txt")
async def run_log_download(request: Request, run_id: RunIdPath) -> Response:
    """The whole log as plain text, as a download."""
    _session(request)
    runyard = _runyard(request)
    try:
        run = await runyard.get_run(run_id)
    except NotFound:
        return Response("Run not found.", status_code=404, media_type="text/plain")
    return StreamingResponse(
        iter_raw_text(runyard.log_path(run.id)),
        media_type="text/plain; charset=utf-8",
        headers={
            **HEADERS,
            "Content-Disposition": f'attachment; filename="runyard-{run.id}.log"',
        },
    )


@router.get("/runs/{runId}/log/live")
async def run_log_stream(request: Request, run_id: RunIdPath) -> Response:
    """The run's log as it is written (SSE): the API's log stream, opened by the session."""
    _session(request, stream=True)
    runyard = _runyard(request)
    try:
        run = await runyard.get_run(run_id)
    except NotFound:
        return Response("Run not found.", status_code=404, media_type="text/plain")
    last = request.headers.get("last-event-id", "")
    given = request.query_params.get("from", "")
    first = int(last) + 1 if last.isdigit() else int(given) if given.isdigit() else 0
    return StreamingResponse(
        follow_log(runyard, run, first, _closing(request), str(request.base_url)),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **HEADERS},
    )


@router.get("/events/live")
async def events_stream(request: Request) -> Response:
    """Run events (SSE) for the pages' live updates: the API's event feed, opened by the session."""
    _session(request, stream=True)
    runyard = _runyard(request)
    last = request.headers.get("last-event-id", "")
    after = int(last) if last.isdigit() else None
    stream: AsyncIterator[str] = _events(runyard.engine.events, after, _closing(request))
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={**SSE_HEADERS, **HEADERS}
    )


# ----- tasks -------------------------------------------------------------------------


@router.get("/tasks/{taskName}")
async def task_page(request: Request, task_name: TaskNamePath) -> Response:
    """A task's definition, schedule, chart of recent runs, its runs, pause/resume, Run now."""
    session = _session(request)
    runyard = _runyard(request)
    try:
        task = runyard.task(task_name)
    except NotFound:
        return _not_found(request, session, f"No task is called {task_name}.")
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
        _context(
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
    session = _session(request)
    await _form(request, session)
    try:
        await _runyard(request).set_paused(task_name, paused)
        session.flashes.append(("ok", "Schedule paused." if paused else "Schedule resumed."))
    except RunyardError as error:
        session.flashes.append(("error", str(error)))
    return _see_other(_task_action_target(task_name))


@router.post("/tasks/{taskName}/run")
async def task_run(request: Request, task_name: TaskNamePath) -> Response:
    """Run now, with the params of the form (declared params only; required ones enforced)."""
    session = _session(request)
    form = await _form(request, session)
    runyard = _runyard(request)
    try:
        task = runyard.task(task_name)
        # An empty optional field means "the default"; a required one must be filled.
        params = {
            spec.name: value for spec in task.params if (value := _one(form, f"param.{spec.name}"))
        }
        missing = [spec.name for spec in task.params if spec.required and not params.get(spec.name)]
        if missing:
            raise InvalidInput(f"params.{missing[0]}", f"is required: fill in {', '.join(missing)}")
        runs = await runyard.trigger(task.name, params, TriggeredBy.API)
    except RunyardError as error:
        session.flashes.append(("error", f"Not started: {error}"))
        return _see_other(_task_action_target(task_name))
    session.flashes.append(("ok", f"Started run {runs[0].id}."))
    return _see_other(f"/runs/{runs[0].id}")


# ----- accounts ----------------------------------------------------------------------


@router.get("/accounts")
async def accounts_page(request: Request) -> Response:
    """Each v3 account's usage, concurrency, queue and keys; create and revoke keys."""
    session = _session(request)
    runyard = _runyard(request)
    keys = await asyncio.to_thread(key_admin(runyard).list)
    used = await asyncio.to_thread(reads.key_last_used, runyard.store)
    accounts = []
    for account in runyard.config.accounts.values():
        usage = await runyard.cloud.account_runtime(account)
        running, queued = runyard.engine.account_counts(account.id)
        accounts.append(
            {
                "account": account,
                "usage": usage,
                "running": running,
                "queued": queued,
                "keys": [key for key in keys if key.account == account.id],
            }
        )
    orphans = [key for key in keys if key.account not in runyard.config.accounts]
    return page(
        request,
        "accounts.html",
        _context(
            request, session, title="Accounts", accounts=accounts, orphans=orphans, last_used=used
        ),
    )


@router.post("/accounts/keys")
async def key_create(request: Request) -> Response:
    """Create a key; it is shown once, on the next page, with a copy button."""
    session = _session(request)
    form = await _form(request, session)
    runyard = _runyard(request)
    account, label = _one(form, "account"), _one(form, "label")[:200]
    try:
        key, plaintext = await asyncio.to_thread(
            key_admin(runyard).create, account, label, runyard.clock()
        )
    except RunyardError as error:
        session.flashes.append(("error", f"No key created: {error}"))
        return _see_other("/accounts")
    session.new_key = (key.account, plaintext)
    return _see_other("/accounts")


@router.post("/accounts/keys/{keyId}/revoke")
async def key_revoke(request: Request, key_id: KeyIdPath) -> Response:
    """Revoke a key: calls made with it are refused from now on."""
    session = _session(request)
    await _form(request, session)
    runyard = _runyard(request)
    try:
        key, newly = await asyncio.to_thread(key_admin(runyard).revoke, key_id, runyard.clock())
        session.flashes.append(
            ("ok", f"Key {key.id} revoked." if newly else f"Key {key.id} was already revoked.")
        )
    except RunyardError as error:
        session.flashes.append(("error", str(error)))
    return _see_other("/accounts")


# ----- notifications -----------------------------------------------------------------

NOTIFICATION_STATUSES = ("pending", "delivered", "failed", "dropped")


@router.get("/notifications")
async def notifications_page(request: Request) -> Response:
    """The in-app notifications, newest first, with how each delivery went."""
    session = _session(request)
    runyard = _runyard(request)
    given = request.query_params
    status = given.get("status", "")
    if status not in NOTIFICATION_STATUSES:
        status = ""
    limit = _int(given.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int(given.get("offset"), 0, 0, 10**12)
    found, total = await runyard.notifications.list(status or None, limit, offset)
    return page(
        request,
        "notifications.html",
        _context(
            request,
            session,
            title="Notifications",
            notifications=found,
            total=total,
            dropped=runyard.notifications.dropped,
            status=status,
            statuses=NOTIFICATION_STATUSES,
            limit=limit,
            offset=offset,
        ),
    )


# ----- daemon ------------------------------------------------------------------------

_SIZE_TTL = 60.0


class _DirSize:
    """The data dir's size, measured in a thread at most once a minute (it can hold many files)."""

    def __init__(self) -> None:
        self.value: int | None = None
        self.measured = 0.0
        self._task: asyncio.Task[None] | None = None

    def current(self, path: FilePath) -> int | None:
        stale = time.monotonic() - self.measured > _SIZE_TTL
        if stale and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._measure(path))
        return self.value

    async def _measure(self, path: FilePath) -> None:
        self.value = await asyncio.to_thread(_tree_size, path)
        self.measured = time.monotonic()


def _tree_size(path: FilePath) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _redacted(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:••••@{tail}"


@router.get("/daemon")
async def daemon_page(request: Request) -> Response:
    """Version, uptime, config path, database, data dir size, and Reload config."""
    session = _session(request)
    runyard = _runyard(request)
    sizes: _DirSize = request.app.state.dashboard_sizes
    size = sizes.current(runyard.data_dir)
    if size is None:
        await asyncio.sleep(0.05)  # a small data dir is measured by now
        size = sizes.value
    now = datetime.now(UTC)
    return page(
        request,
        "daemon.html",
        _context(
            request,
            session,
            title="Daemon",
            daemon_version=__version__,
            uptime=words.span((now - runyard.started_at).total_seconds()),
            started_at=runyard.started_at,
            config_path=str(runyard.config.path),
            database=_redacted(runyard.database_url),
            data_dir=str(runyard.data_dir),
            data_size=size,
            report=request.app.state.dashboard_reloads.pop(session.id, None),
        ),
    )


@router.post("/daemon/reload")
async def daemon_reload(request: Request) -> Response:
    """Re-read the config; the page then shows what changed, or every error."""
    session = _session(request)
    await _form(request, session)
    runyard = _runyard(request)
    reports: dict[str, dict[str, Any]] = request.app.state.dashboard_reloads
    try:
        changes = await runyard.reload()
        reports[session.id] = {"ok": True, "changes": changes}
    except ConfigError as error:
        reports[session.id] = {"ok": False, "path": error.path, "problems": error.problems}
    while len(reports) > 1000:
        reports.pop(next(iter(reports)))
    return _see_other("/daemon")


# ----- errors ------------------------------------------------------------------------


def _not_found(request: Request, session: Session, message: str) -> Response:
    return page(
        request,
        "error.html",
        _context(request, session, title="Not found", heading="Not found", message=message),
        status_code=404,
    )


def install(app: Any) -> None:
    """Add the dashboard to the app: its routes, sessions and error answers."""
    app.state.sessions = Sessions()
    app.state.dashboard_sizes = _DirSize()
    app.state.dashboard_reloads = {}
    app.include_router(router)

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        if exc.stream:
            return Response("Sign in first.", status_code=401, media_type="text/plain")
        return _see_other("/login?" + urlencode({"next": exc.next_path}))

    async def bad_form(request: Request, exc: Exception) -> Response:
        session = sessions_of(request).get(request.cookies.get(COOKIE))
        return page(
            request,
            "error.html",
            _context(
                request,
                session,
                title="Form refused",
                heading="Form refused",
                message=f"{exc} Go back, reload the page and try again.",
            ),
            status_code=403,
        )

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(BadForm, bad_form)
