"""The dashboard: its page groups' routers, static files, sessions and error answers.

Every page needs a signed-in session (`/login`); every form that changes
something carries the session's CSRF token. No business rule lives here: the
pages call the same Runyard methods as the API, and read through
`runyard.store.dashboard`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from runyard.web import accounts, daemon, notifications, overview, runs, services, signin, tasks
from runyard.web.daemon import DirSize
from runyard.web.pages import (
    BadForm,
    SignInRequired,
    context,
    see_other,
    sessions_of,
)
from runyard.web.render import page, static_text
from runyard.web.session import (
    COOKIE,
    Sessions,
)

router = APIRouter(include_in_schema=False)

_STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "log.js": "text/javascript; charset=utf-8",
}
_ASSETS = {name: (media, static_text(name)) for name, media in _STATIC.items()}


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


def install(app: Any) -> None:
    """Add the dashboard to the app: its routes, sessions and error answers."""
    app.state.sessions = Sessions()
    app.state.dashboard_sizes = DirSize()
    app.state.dashboard_reloads = {}
    app.include_router(router)
    for group in (signin, overview, runs, tasks, services, accounts, notifications, daemon):
        app.include_router(group.router)

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        if exc.stream:
            return Response("Sign in first.", status_code=401, media_type="text/plain")
        return see_other("/login?" + urlencode({"next": exc.next_path}))

    async def bad_form(request: Request, exc: Exception) -> Response:
        session = sessions_of(request).get(request.cookies.get(COOKIE))
        return page(
            request,
            "error.html",
            context(
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
