"""Templates and the headers every dashboard response carries.

Jinja2 with autoescaping on for every template: a value reaches the page as
text, whatever it holds. Pages load only the daemon's own script and style
sheet (the Content-Security-Policy forbids inline scripts and styles).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.requests import Request
from starlette.responses import HTMLResponse

from runyard import __version__
from runyard.domain import words
from runyard.domain.models import FAILURE_LIKE, EndReason, Run, RunStatus
from runyard.domain.services import UP_STATES, InstanceState

if TYPE_CHECKING:
    import jinja2

POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _stamp(value: datetime | None) -> str:
    if value is None:
        return "–"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _zoned(value: datetime | None, zone: str) -> str:
    """Return a time as the wall clock of `zone`, naming the zone: 2026-12-03 03:00 Europe/Riga."""
    if value is None:
        return "–"
    try:
        local = value.astimezone(ZoneInfo(zone)) if zone else value.astimezone(UTC)
    except (ZoneInfoNotFoundError, ValueError):
        local, zone = value.astimezone(UTC), "UTC"
    return f"{local:%Y-%m-%d %H:%M} {zone or 'UTC'}"


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _interval(value: timedelta | None) -> str:
    if value is None:
        return "none"
    seconds = value.total_seconds()
    if 0 < seconds < 1:
        return f"{seconds * 1000:g} ms"  # a service's probe interval: 100 ms, not "0 s"
    return words.span(seconds)


def outcome(run: Run) -> str:
    """Return the word a run's state shows as (and its CSS class): running, success, ..."""
    if run.status is not RunStatus.ENDED:
        return "queued" if run.status is RunStatus.PENDING else "running"
    return run.end_reason.value if run.end_reason is not None else "ended"


def tone(run: Run) -> str:
    """Return the colour family of a run's state: ok, bad, live, idle."""
    if run.status is RunStatus.RUNNING:
        return "live"
    if run.status is RunStatus.PENDING:
        return "idle"
    if run.end_reason is EndReason.SUCCESS:
        return "ok"
    if run.end_reason in FAILURE_LIKE:
        return "bad"
    return "idle"


# The colour family of each service instance state; the badge always shows the state's name.
_INSTANCE_TONES = {
    InstanceState.WAITING: "warn",
    InstanceState.STARTING: "live",
    InstanceState.RUNNING: "ok",
    InstanceState.HEALTHY: "ok",
    InstanceState.UNHEALTHY: "bad",
    InstanceState.BACKOFF: "warn",
    InstanceState.FATAL: "bad",
    InstanceState.STOPPED: "idle",
}


def instance_tone(state: InstanceState) -> str:
    """Return the colour family of a service instance's state: ok, bad, warn, live, idle."""
    return _INSTANCE_TONES.get(state, "idle")


@functools.cache
def _environment() -> jinja2.Environment:
    """Return the dashboard's template environment, made on the first page served.

    Jinja2 is imported here, not at the module's top: a daemon whose dashboard
    nobody opens does not hold it (2 MB of its idle memory, bench/memory.py).
    It is a dependency of the package, so deferring it defers no error.
    """
    import jinja2  # noqa: PLC0415 - see the docstring

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("runyard.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        instance_tone=instance_tone,
        stamp=_stamp,
        iso=_iso,
        zoned=_zoned,
        interval=_interval,
        duration=words.duration,
        outcome=outcome,
        tone=tone,
    )
    environment.globals.update(
        version=__version__, relative=words.relative, span=words.span, up_states=UP_STATES
    )
    return environment


def static_text(name: str) -> str:
    return resources.files("runyard.web").joinpath("static", name).read_text(encoding="utf-8")


def is_fragment(request: Request) -> bool:
    """Whether the page's script asks for a refresh of <main> (dashboard.js), not a page."""
    return request.headers.get("x-runyard-fragment") == "1"


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render `template` as a full page, or only its <main> when the script asks for a refresh."""
    fragment = is_fragment(request)
    body = (
        _environment()
        .get_template(template)
        .render(request_path=request.url.path, fragment=fragment, **context)
    )
    return HTMLResponse(body, status_code=status_code, headers={**HEADERS, **(headers or {})})
