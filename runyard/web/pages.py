"""What every dashboard page shares: the session check, forms, redirects and the
template context. No routes here; each page group has its module and router.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Path, Request
from fastapi.responses import RedirectResponse, Response

from runyard.api.deps import Closing
from runyard.app import Runyard
from runyard.web.render import HEADERS, is_fragment, page
from runyard.web.session import (
    COOKIE,
    Session,
    Sessions,
    safe_next,
    tokens_match,
)

MAX_FORM_BYTES = 64 * 1024

TaskNamePath = Annotated[str, Path(alias="taskName", min_length=1, max_length=100)]
ServiceNamePath = Annotated[str, Path(alias="serviceName", min_length=1, max_length=100)]
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


def runyard_of(request: Request) -> Runyard:
    runyard: Runyard = request.app.state.runyard
    return runyard


def closing_of(request: Request) -> Closing:
    closing: Closing = request.app.state.closing
    return closing


def current_session(request: Request, *, stream: bool = False) -> Session:
    session = sessions_of(request).get(request.cookies.get(COOKIE))
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = request.headers.get("x-runyard-page") or "/"
        raise SignInRequired(safe_next(target), stream)
    return session


async def read_form(request: Request, session: Session | None) -> dict[str, list[str]]:
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


def form_value(form: dict[str, list[str]], name: str, default: str = "") -> str:
    values = form.get(name)
    return values[0] if values else default


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=HEADERS)


def context(request: Request, session: Session | None, **values: Any) -> dict[str, Any]:
    runyard = runyard_of(request)
    flashes: list[tuple[str, str]] = []
    new_key = None
    # What the last action did is shown once, by the page it leads to: a
    # refresh the old page's script had in flight does not take it first.
    if session is not None and not is_fragment(request):
        flashes, session.flashes = session.flashes, []
        new_key, session.new_key = session.new_key, None
    return {
        "csrf": session.csrf if session is not None else "",
        "signed_in": session is not None,
        # The nav links Services only when the config has some.
        "has_services": bool(runyard.config.services),
        "flashes": flashes,
        "new_key": new_key,
        "now": runyard.clock(),
        **values,
    }


def bounded_int(value: str | None, default: int, low: int, high: int) -> int:
    """Read a number from a query parameter, `default` when absent or not one, kept in range."""
    try:
        number = int(value) if value not in (None, "") else default
    except ValueError:
        return default
    return max(low, min(high, number))


def not_found(request: Request, session: Session, message: str) -> Response:
    return page(
        request,
        "error.html",
        context(request, session, title="Not found", heading="Not found", message=message),
        status_code=404,
    )
