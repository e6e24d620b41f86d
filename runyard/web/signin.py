"""Sign in and out: the daemon's API token opens a server-side session (`web/session.py`)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import Response

from runyard.web.pages import (
    context,
    current_session,
    form_value,
    read_form,
    runyard_of,
    see_other,
    sessions_of,
)
from runyard.web.render import page
from runyard.web.session import (
    COOKIE,
    LOGIN_COOKIE,
    safe_next,
    tokens_match,
)

router = APIRouter(include_in_schema=False)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    """The sign-in form: the daemon's API token opens a session."""
    if sessions_of(request).get(request.cookies.get(COOKIE)) is not None:
        return see_other(safe_next(next))
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
        context(
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
    form = await read_form(request, None)
    next_path = safe_next(form_value(form, "next", "/"))
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
    if not cookie_token or not tokens_match(form_value(form, "login_token"), cookie_token):
        return _login_form(request, next_path, "The sign-in form expired: please try again.", 403)
    token = form_value(form, "token").strip()
    if not token or not tokens_match(token, runyard_of(request).token):
        sessions.count_failure(address)
        return _login_form(request, next_path, "That token is not this daemon's API token.", 401)
    session = sessions.create()
    response = see_other(next_path)
    response.set_cookie(
        COOKIE, session.id, httponly=True, samesite="strict", secure=_secure(request), path="/"
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (its CSRF token is required: no one signs you out from elsewhere)."""
    session = current_session(request)
    await read_form(request, session)
    sessions_of(request).end(session.id)
    response = see_other("/login")
    response.delete_cookie(COOKIE, path="/")
    return response
