"""The REST trigger's plain route answers exactly as the FastAPI route it stands in front of.

`runyard/api/trigger_route.py` answers a trigger with no query string itself
and hands every other request back to the FastAPI route. `?wait=false`
changes nothing in a trigger's meaning but always goes to the FastAPI route,
so each request here is sent both ways and the answers must be the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from runyard.api import trigger_route
from runyard.api.app import create_app
from runyard.api.deps import schema_base
from runyard.app import Runyard

CONFIG = """
[daemon]
data_dir = "data"
shutdown_timeout = "5s"

[tasks.hello]
max_concurrent = 100
run = "true"

[tasks.greet]
max_concurrent = 100
run = 'echo "hello $WHO"'

[[tasks.greet.params]]
name = "who"
required = true

[tasks.count]
max_concurrent = 100
run = "true"

[[tasks.count.params]]
name = "n"
default = "1"
"""

HANDED_BACK_BASE = "http://handed-back.test/"
ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def app(runyard: Runyard) -> FastAPI:
    app = create_app(runyard)
    # Only the FastAPI route asks for this dependency: its answers name this base.
    app.dependency_overrides[schema_base] = lambda: HANDED_BACK_BASE
    return app


@pytest.fixture
def client(app: FastAPI, runyard: Runyard) -> Iterator[TestClient]:
    with TestClient(app, headers={"Authorization": f"Bearer {runyard.token}"}) as client:
        yield client


def comparable(response: httpx.Response) -> tuple[int, str, str]:
    """Status, content type and body, with run ids, times and the schema base made alike."""
    text = response.text.replace(HANDED_BACK_BASE, "http://testserver/")
    text = TIMESTAMP.sub("<time>", ULID.sub("<id>", text))
    return response.status_code, response.headers["content-type"], text


def test_a_plain_trigger_is_answered_by_the_plain_route(client: TestClient) -> None:
    plain = client.post("/api/tasks/hello/run")
    handed_back = client.post("/api/tasks/hello/run", params={"wait": "false"})
    assert plain.status_code == handed_back.status_code == 201
    # Tells the two routes apart, so the comparisons below compare two things.
    assert plain.json()["$schema"] == "http://testserver/schemas/Run.json"
    assert handed_back.json()["$schema"] == HANDED_BACK_BASE + "schemas/Run.json"
    assert comparable(plain) == comparable(handed_back)
    assert plain.headers["content-length"] == str(len(plain.content))


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/api/tasks/hello/run", None, {}),
        ("/api/tasks/hello/run", b"{}", JSON),
        ("/api/tasks/hello/run", b'{"params": {}}', JSON),
        ("/api/tasks/hello/run", b'{"data": [["a", "b"], ["1", "2"]]}', JSON),
        ("/api/tasks/hello/run", b'{"params": {}, "data": null}', JSON),
        ("/api/tasks/hello/run", b"null", JSON),
        ("/api/tasks/greet/run", b'{"params": {"who": "you"}}', JSON),
        (
            "/api/tasks/greet/run",
            b'{"params": {"who": "you"}}',
            {"Content-Type": "Application/JSON; charset=utf-8"},
        ),
        ("/api/tasks/count/run", b'{"params": {"n": 3}}', JSON),
    ],
)
def test_plain_triggers_are_answered_alike(
    client: TestClient, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    plain = client.post(path, content=body, headers=headers)
    handed_back = client.post(path, params={"wait": "false"}, content=body, headers=headers)
    assert plain.status_code == 201, plain.text
    assert plain.json()["$schema"] == "http://testserver/schemas/Run.json"
    assert comparable(plain) == comparable(handed_back)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"params": {}}', {"Content-Type": "application/x+json"}),
        (b'{"params": {}}', {"Content-Type": "application/json"}),
    ],
)
def test_handed_back_triggers_are_accepted(
    client: TestClient, body: bytes, headers: dict[str, str]
) -> None:
    handed_back = client.post("/api/tasks/hello/run?wait=false", content=body, headers=headers)
    assert handed_back.status_code == 201, handed_back.text
    assert handed_back.json()["$schema"] == HANDED_BACK_BASE + "schemas/Run.json"
    plain = client.post("/api/tasks/hello/run", content=body, headers=headers)
    assert comparable(plain) == comparable(handed_back)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        # Refused by the service, answered by the plain route's exception handlers.
        ("/api/tasks/nope/run", None, {}),
        ("/api/tasks/greet/run", None, {}),
        ("/api/tasks/greet/run", b'{"params": {"who": "a", "x": 1}}', JSON),
        ("/api/tasks/count/run", b'{"params": {"n": [1]}}', JSON),
        ("/api/tasks/hello/run", b'{"data": "not a table"}', JSON),
        # Handed back: refused by FastAPI's validation.
        ("/api/tasks/hello/run", b'{"params": ', JSON),
        ("/api/tasks/hello/run", b"[]", JSON),
        ("/api/tasks/hello/run", b'"text"', JSON),
        ("/api/tasks/hello/run", b'{"parms": {}}', JSON),
        ("/api/tasks/hello/run", b'{"params": "who"}', JSON),
        ("/api/tasks/hello/run", b'{"params": {}}', {}),
        ("/api/tasks/hello/run", b'{"params": {}}', {"Content-Type": "text/plain"}),
        ("/api/tasks/hello/run", b'{"params": {"a\\u0000b": 1}}', JSON),
        ("/api/tasks/hello/run", b'{"params": {"\\ud800": 1}}', JSON),
        ("/api/tasks/hello/run", b"\xff\xfe", JSON),
        ("/api/tasks/hello/run", b"[" * 100_000, JSON),
        ("/api/tasks/he%20llo/run", None, {}),
        ("/api/tasks/he%00llo/run", None, {}),
        ("/api/tasks/" + "a" * 101 + "/run", None, {}),
        ("/api/tasks/h\u00e9llo/run", None, {}),
    ],
)
def test_refused_triggers_are_answered_alike(
    client: TestClient, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    plain = client.post(path, content=body, headers=headers)
    handed_back = client.post(path, params={"wait": "false"}, content=body, headers=headers)
    assert 400 <= plain.status_code < 500, plain.text
    assert comparable(plain) == comparable(handed_back)


def test_other_methods_are_refused_as_before(client: TestClient) -> None:
    response = client.get("/api/tasks/hello/run")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["detail"] == "GET is not allowed on /api/tasks/hello/run; allowed: POST."


def test_a_trigger_without_the_token_is_refused(app: FastAPI) -> None:
    with TestClient(app) as anonymous:
        response = anonymous.post("/api/tasks/hello/run")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_openapi_document_is_the_fastapi_routes(runyard: Runyard, client: TestClient) -> None:
    without = create_app(runyard)
    routes = without.router.routes
    [plain_route] = [r for r in routes if getattr(r, "endpoint", None) is trigger_route.trigger]
    routes.remove(plain_route)
    expected = TestClient(without).get("/openapi.json").json()
    document = client.get("/openapi.json").json()
    assert document == expected
    assert document["paths"]["/api/tasks/hello/run"]["post"]["operationId"] == "trigger_hello"
