"""Route census: every route needs the token unless it is listed in PUBLIC_ROUTES."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.api.auth import (
    CAPABILITY_ROUTES,
    CONFIG_PUBLIC_ROUTES,
    PUBLIC_ROUTES,
    QUERY_TOKEN_ROUTES,
    SESSION_ROUTES,
)
from runyard.app import Runyard

CONFIG = """
[daemon]
data_dir = "data"

[tasks.hello]
run = "echo hi"
"""

# What to put in each path parameter so the request reaches a real handler.
DUMMY_PATH_VALUES = {
    "name": "Run",
    "taskName": "hello",
    "runId": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "file": "swagger-ui.css",
    "asset": "dashboard.css",
    "keyId": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
}

# Routes with a credential of their own: not the bearer token's to open or refuse.
OWN_CREDENTIAL = PUBLIC_ROUTES | CAPABILITY_ROUTES | SESSION_ROUTES


@pytest.fixture
def app(runyard: Runyard) -> FastAPI:
    return create_app(runyard)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Return (method, path template) of every route, included routers flattened."""
    found = []
    for route in iter_route_contexts(app.routes):
        assert route.path is not None
        for method in sorted(route.methods or {"GET"}):
            if method != "HEAD":
                found.append((method, route.path))
    return found


def concrete(template: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: DUMMY_PATH_VALUES.get(m.group(1), "x"), template)


def test_census_finds_the_api(app: FastAPI) -> None:
    paths = {path for _method, path in routes(app)}
    assert {
        "/api/tasks",
        "/api/runs",
        "/api/events",
        "/api/runs/{runId}/log/stream",
        "/api/notifications",
    } <= paths


def test_every_non_public_route_refuses_requests_without_a_token(
    app: FastAPI, client: TestClient
) -> None:
    checked = 0
    for method, template in routes(app):
        if template in OWN_CREDENTIAL:
            continue
        response = client.request(method, concrete(template))
        assert response.status_code == 401, (method, template, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == 401
        assert body["title"] == "Unauthorized"
        checked += 1
    assert checked >= 10


def test_a_wrong_token_is_refused_everywhere(app: FastAPI, client: TestClient) -> None:
    for method, template in routes(app):
        if template in OWN_CREDENTIAL:
            continue
        response = client.request(
            method, concrete(template), headers={"Authorization": "Bearer not-the-token"}
        )
        assert response.status_code == 401, (method, template)
        assert response.json()["detail"] == "The bearer token is not valid."


def test_public_routes_are_listed_and_answer_without_a_token(
    app: FastAPI, client: TestClient
) -> None:
    templates = {path for _method, path in routes(app)}
    assert templates >= PUBLIC_ROUTES, "PUBLIC_ROUTES lists a route that does not exist"
    for method, template in routes(app):
        if template not in PUBLIC_ROUTES:
            continue
        response = client.request(method, concrete(template))
        assert response.status_code == 200, (method, template, response.text)


def test_routes_the_config_may_open_exist_and_are_closed_by_default(
    app: FastAPI, client: TestClient
) -> None:
    templates = {path for _method, path in routes(app)}
    assert templates >= CONFIG_PUBLIC_ROUTES, "CONFIG_PUBLIC_ROUTES lists a missing route"
    assert not CONFIG_PUBLIC_ROUTES & (PUBLIC_ROUTES | CAPABILITY_ROUTES)
    for template in CONFIG_PUBLIC_ROUTES:
        assert client.get(concrete(template)).status_code == 401, template


def test_capability_routes_refuse_requests_without_their_credential(
    app: FastAPI, client: TestClient
) -> None:
    templates = {path for _method, path in routes(app)}
    assert templates >= CAPABILITY_ROUTES, "CAPABILITY_ROUTES lists a route that does not exist"
    assert not PUBLIC_ROUTES & CAPABILITY_ROUTES
    checked = 0
    for method, template in routes(app):
        if template not in CAPABILITY_ROUTES:
            continue
        # The daemon token is no credential here: it must not open these routes.
        headers = {"Authorization": "Bearer not-an-account-key"}
        if method == "POST":
            response = client.post(concrete(template), json={}, headers=headers)
        else:
            response = client.get(concrete(template), headers=headers)
        if template.startswith("/api/v3/") and template != "/api/v3/stop":
            assert response.status_code == 401, (method, template, response.text)
            assert response.json() == {"status": "error", "message": "Invalid key"}
        else:
            assert response.status_code == 404, (method, template, response.text)
        checked += 1
    assert checked == len(CAPABILITY_ROUTES)


def test_dashboard_routes_need_a_session_and_the_token_does_not_open_them(
    runyard: Runyard, app: FastAPI
) -> None:
    templates = {path for _method, path in routes(app)}
    assert templates >= SESSION_ROUTES, "SESSION_ROUTES lists a route that does not exist"
    assert not SESSION_ROUTES & (PUBLIC_ROUTES | CAPABILITY_ROUTES | CONFIG_PUBLIC_ROUTES)
    # The dashboard's own routes are all listed: none is left to the bearer token by mistake.
    dashboard = {
        "/login",
        "/logout",
        "/",
        "/runs",
        "/accounts",
        "/daemon",
        "/events/live",
        "/notifications",
        "/services",
    }
    for prefix in ("/runs/", "/tasks/", "/services/", "/accounts/", "/daemon/"):
        dashboard |= {path for path in templates if path.startswith(prefix)}
    assert dashboard == SESSION_ROUTES
    checked = 0
    with TestClient(app, follow_redirects=False) as client:
        for method, template in routes(app):
            if template not in SESSION_ROUTES:
                continue
            # Even the daemon token opens no page: pages take a session only.
            headers = {"Authorization": f"Bearer {runyard.token}"}
            path = concrete(template)
            response = client.request(method, path, headers=headers)
            if template == "/login":
                # The form itself; a POST without the form's token is refused.
                assert response.status_code == (200 if method == "GET" else 403), template
            elif template in ("/events/live", "/runs/{runId}/log/live"):
                assert response.status_code == 401, (method, template)
            else:
                assert response.status_code == 303, (method, template, response.text)
                location = response.headers["location"]
                assert location.startswith("/login?next="), location
                if method == "GET":
                    assert location == "/login?" + urlencode({"next": path})
            checked += 1
    assert checked == len(routes_of(app, SESSION_ROUTES))


def routes_of(app: FastAPI, templates: frozenset[str]) -> list[tuple[str, str]]:
    return [(method, path) for method, path in routes(app) if path in templates]


def test_dashboard_pages_carry_a_content_security_policy_without_inline_scripts(
    client: TestClient,
) -> None:
    response = client.get("/login")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy


def test_query_token_is_accepted_only_on_sse_routes(runyard: Runyard, client: TestClient) -> None:
    assert frozenset({"/api/events", "/api/runs/{runId}/log/stream"}) == QUERY_TOKEN_ROUTES
    # A JSON route ignores ?token=: tokens in URLs end up in logs.
    assert client.get("/api/tasks", params={"token": runyard.token}).status_code == 401
    # An EventSource cannot send headers, so the SSE routes take it.
    with client.stream("GET", "/api/events", params={"token": runyard.token}) as response:
        assert response.status_code == 200
    with client.stream("GET", "/api/events", params={"token": "wrong"}) as response:
        assert response.status_code == 401


def test_a_route_added_later_is_protected_by_default(app: FastAPI, client: TestClient) -> None:
    @app.get("/api/added-later")
    async def added_later() -> dict[str, str]:
        return {"secret": "yes"}

    assert client.get("/api/added-later").status_code == 401


def test_unknown_paths_need_the_token_too(runyard: Runyard, client: TestClient) -> None:
    # Without the token nobody learns which paths exist.
    assert client.get("/api/nothing-here").status_code == 401
    response = client.get("/api/nothing-here", headers={"Authorization": f"Bearer {runyard.token}"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
