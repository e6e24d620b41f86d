"""Bearer-token auth for the whole app: every route needs the token unless listed public.

It is ASGI middleware rather than a route dependency so that anything added
later (a mounted app, a plain Starlette route) is protected without anyone
remembering to opt in.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from runyard.api.errors import problem
from runyard.cluster.credential import CLUSTER_HEADER, credential_matches

_CLUSTER_HEADER = CLUSTER_HEADER.lower().encode("latin-1")

# Route templates answered without a token. Keep each entry justified.
PUBLIC_ROUTES: frozenset[str] = frozenset(
    {
        "/health",  # liveness probes and load balancers carry no credentials; reveals nothing
        "/openapi.json",  # the API description is public documentation, holds no data
        "/docs",  # Swagger UI page: static HTML that loads /openapi.json
        "/docs/oauth2-redirect",  # part of Swagger UI; static HTML
        "/redoc",  # ReDoc page: static HTML that loads /openapi.json
        "/docs/assets/{file}",  # the scripts, styles and icon of /docs and /redoc
        "/schemas/{name}.json",  # `$schema` URLs in bodies must resolve for any JSON tool
        # The run viewer's script and style sheet: the same static files for every run.
        "/view/static/viewer.js",
        "/view/static/viewer.css",
        # The dashboard's script and style sheet: the same files for everyone.
        "/ui/static/{asset}",
    }
)

# The dashboard's pages and forms: they open with a signed-in session (cookie)
# instead of the bearer token. Without one, a page redirects to /login?next=...,
# a stream answers 401; every POST also needs the session's CSRF token.
SESSION_ROUTES: frozenset[str] = frozenset(
    {
        "/",
        "/login",  # the sign-in form itself, and its answer: the token is what it asks for
        "/logout",
        "/runs",
        "/runs/bulk",
        "/runs/{runId}",
        "/runs/{runId}/stop",
        "/runs/{runId}/rerun",
        "/runs/{runId}/log.txt",
        "/runs/{runId}/log/live",
        "/events/live",
        "/tasks/{taskName}",
        "/tasks/{taskName}/pause",
        "/tasks/{taskName}/resume",
        "/tasks/{taskName}/run",
        "/services",
        "/services/{serviceName}",
        "/services/{serviceName}/start",
        "/services/{serviceName}/stop",
        "/services/{serviceName}/restart",
        "/accounts",
        "/accounts/keys",
        "/accounts/keys/{keyId}/revoke",
        "/daemon",
        "/notifications",
        "/daemon/reload",
    }
)

# Routes that check a credential of their own instead of the token, and refuse
# a request without it in their own format. The census test holds them to that.
CAPABILITY_ROUTES: frozenset[str] = frozenset(
    {
        # The v3 API authenticates each call with an account key in the body, as
        # the hosted service does: no key or a wrong one answers 401 "Invalid key".
        "/api/v3/trigger",
        "/api/v3/run-reports",
        "/api/v3/run-data",
        "/api/v3/remaining-runtime",
        "/api/v3/list-automations",
        # Stops only the run whose viewer password (its id and 192 random bits) it
        # carries; 404 otherwise.
        "/api/v3/stop",
        # The run viewer: each run's page, state and log open only with that run's
        # secret in `password`, the link's capability; 404 otherwise.
        "/view/{runId}",
        "/view/{runId}/state",
        "/view/{runId}/log",
    }
)

# Routes the config may open to anyone (`[metrics] public = true`): the
# middleware asks at each request, so a reload takes effect at once.
CONFIG_PUBLIC_ROUTES: frozenset[str] = frozenset({"/metrics"})

# Routes a node may ask of another node on behalf of its own caller (README
# "Several nodes"): what only a run's own node has. Besides the token they take
# the cluster credential (runyard/cluster/credential.py), and no other route
# does: it opens a run's log, its output data and its stop, nothing more.
CLUSTER_ROUTES: frozenset[str] = frozenset(
    {
        "/api/runs/{runId}/log",
        "/api/runs/{runId}/log/raw",
        "/api/runs/{runId}/log/stream",
        "/api/runs/{runId}/output",
        "/api/runs/{runId}/stop",
    }
)

# Routes that also take `?token=`: a browser's EventSource cannot set headers.
# Kept to these streams because a token in a URL can end up in proxy logs.
QUERY_TOKEN_ROUTES: frozenset[str] = frozenset(
    {
        "/api/events",
        "/api/runs/{runId}/log/stream",
    }
)


def _matcher(templates: frozenset[str]) -> Callable[[str], bool]:
    # One alternation rather than a pattern per template: every request that
    # is not public was tried against each of the ~40 templates in turn, a
    # tenth of a trigger's time in the app. Group names go (they may repeat).
    patterns = sorted(compile_path(template)[0].pattern for template in templates)
    unnamed = (re.sub(r"\(\?P<\w+>", "(?:", pattern) for pattern in patterns)
    combined = re.compile("|".join(f"(?:{pattern})" for pattern in unnamed))
    return lambda path: combined.match(path) is not None


# Matched on the path alone, before routing: the method does not make a route public.
is_public = _matcher(PUBLIC_ROUTES | CAPABILITY_ROUTES | SESSION_ROUTES)
is_config_public = _matcher(CONFIG_PUBLIC_ROUTES)
is_cluster_route = _matcher(CLUSTER_ROUTES)
takes_query_token = _matcher(QUERY_TOKEN_ROUTES)


def _route_path(scope: Scope) -> str:
    # The path the router matches: without the root_path a proxy mounted us under.
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def _token_matches(given: str, expected: str) -> bool:
    # compare_digest refuses non-ASCII str; compare the bytes instead.
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def presented_token(scope: Scope, *, allow_query: bool) -> str | None:
    """Return the token the request carries, from the header or (if allowed) the query."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    if allow_query:
        raw: bytes = scope.get("query_string", b"")
        values = parse_qs(raw.decode("latin-1")).get("token")
        if values and values[0]:
            return values[0]
    return None


def presented_cluster_credential(scope: Scope) -> str | None:
    """Return the cluster credential the request carries in its header, if any."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == _CLUSTER_HEADER:
            return value.decode("latin-1")
    return None


def carries_token(scope: Scope, token: str) -> bool:
    """Return whether the request carries the daemon's token in its Authorization header."""
    given = presented_token(scope, allow_query=False)
    return given is not None and _token_matches(given, token)


class BearerAuth:
    """Answer 401 to any request without the right token, unless its route is public."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        opened: Callable[[str], bool] = lambda _path: False,
        cluster_secret: str | None = None,
    ) -> None:
        self.app = app
        self.token = token
        # Whether the config opens a route of CONFIG_PUBLIC_ROUTES now.
        self.opened = opened
        # The secret other nodes carry (PostgreSQL); None: no cluster (SQLite).
        self.cluster_secret = cluster_secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if is_public(path) or (is_config_public(path) and self.opened(path)):
            await self.app(scope, receive, send)
            return
        request: Request
        if is_cluster_route(path):
            credential = presented_cluster_credential(scope)
            if credential is not None:
                if credential_matches(credential, self.cluster_secret):
                    await self.app(scope, receive, send)
                    return
                # Never echoed, never logged: only that it was wrong.
                request = Request(scope)
                response = problem(
                    str(request.base_url),
                    401,
                    f"The {CLUSTER_HEADER} header is not this cluster's credential.",
                    request.url.path,
                )
                await response(scope, receive, send)
                return
        given = presented_token(scope, allow_query=takes_query_token(path))
        if given is not None and _token_matches(given, self.token):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        detail = (
            "Missing bearer token: send the header 'Authorization: Bearer <token>'."
            if given is None
            else "The bearer token is not valid."
        )
        response = problem(
            str(request.base_url),
            401,
            detail,
            request.url.path,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)
