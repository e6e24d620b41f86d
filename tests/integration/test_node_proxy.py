"""Nodes asking each other: the HTTP client (cluster/client.py) and the cluster credential's check.

The client is driven against httpx's MockTransport (what it sends, how each
failure becomes NodeUnreachable) and against a port nothing listens on; the
check is the real BearerAuth middleware around a small app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from runyard.api.app import create_app
from runyard.api.auth import CLUSTER_ROUTES, BearerAuth
from runyard.app import Runyard
from runyard.cluster.client import NodeClient, Peer
from runyard.cluster.credential import CLUSTER_HEADER, FORWARDED_BY_HEADER, credential_matches
from runyard.exceptions import NodeUnreachable

CONFIG = """
[daemon]
data_dir = "data"

[tasks.hello]
run = "echo hi"
"""

SECRET = "the-cluster-secret-0123456789abcdefghijklmnop"
TOKEN = "the-node-token"
RUN = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
BRAVO = Peer("bravo", "http://bravo.test:9477")


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> NodeClient:
    return NodeClient("alpha", SECRET, transport=httpx.MockTransport(handler))


def test_a_request_carries_the_secret_and_never_the_callers_credentials() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"total_lines": 3}, headers={"Set-Cookie": "s=1"})

    async def ask() -> object:
        client = _client(handler)
        try:
            answer = await client.open(
                BRAVO,
                RUN,
                "GET",
                f"/api/runs/{RUN}/log/stream",
                query="from=2",
                headers={
                    "Authorization": "Bearer alphas-token",
                    "Cookie": "session=abc",
                    "Last-Event-ID": "4",
                    CLUSTER_HEADER: "a-caller-made-this-up",
                },
            )
            await answer.close()
            assert ("set-cookie", "s=1") not in answer.headers
            return await client.get_json(BRAVO, RUN, f"/api/runs/{RUN}/log", "limit=1")
        finally:
            await client.aclose()

    assert asyncio.run(ask()) == {"total_lines": 3}
    first = seen[0]
    assert str(first.url) == f"http://bravo.test:9477/api/runs/{RUN}/log/stream?from=2"
    assert first.headers[CLUSTER_HEADER] == SECRET
    assert first.headers[FORWARDED_BY_HEADER] == "alpha"
    assert first.headers["last-event-id"] == "4"
    assert "authorization" not in first.headers
    assert "cookie" not in first.headers
    assert first.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ConnectError("Connection refused"), "no connection (Connection refused)"),
        (httpx.ConnectTimeout("slow"), "did not answer within 3 s"),
        (httpx.ReadTimeout("slow"), "did not answer within 15 s"),
    ],
)
def test_a_node_that_does_not_answer_is_named(failure: Exception, expected: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    async def ask() -> None:
        client = _client(handler)
        try:
            await client.open(BRAVO, RUN, "GET", f"/api/runs/{RUN}/log")
        finally:
            await client.aclose()

    with pytest.raises(NodeUnreachable) as caught:
        asyncio.run(ask())
    assert caught.value.node == "bravo"
    assert caught.value.run_id == RUN
    assert expected in caught.value.reason
    assert "http://bravo.test:9477" in caught.value.reason
    assert SECRET not in str(caught.value)


def test_a_refused_credential_and_a_failed_answer_are_named() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/output"):
            return httpx.Response(401, json={"detail": "no"})
        return httpx.Response(404, json={"detail": "No run named 'x' exists."})

    async def ask(path: str) -> object:
        client = _client(handler)
        try:
            return await client.get_json(BRAVO, RUN, path)
        finally:
            await client.aclose()

    with pytest.raises(NodeUnreachable, match="refused this node's cluster credential"):
        asyncio.run(ask(f"/api/runs/{RUN}/output"))
    with pytest.raises(NodeUnreachable, match=r"answered 404: No run named 'x' exists\."):
        asyncio.run(ask(f"/api/runs/{RUN}/log"))


def test_nothing_listening_is_a_quick_error_not_a_hang() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there

    async def ask() -> None:
        client = NodeClient("alpha", SECRET)
        try:
            await client.open(Peer("bravo", f"http://127.0.0.1:{port}"), RUN, "GET", "/api/x")
        finally:
            await client.aclose()

    started = time.monotonic()
    with pytest.raises(NodeUnreachable, match="no connection"):
        asyncio.run(ask())
    assert time.monotonic() - started < 3


def test_credential_matches_only_the_secret() -> None:
    assert credential_matches(SECRET, SECRET)
    assert not credential_matches(SECRET[:-1], SECRET)
    assert not credential_matches("", SECRET)
    assert not credential_matches(None, SECRET)
    assert not credential_matches(SECRET, None)  # no cluster (SQLite): nothing matches
    assert not credential_matches("é", SECRET)


@pytest.fixture
def guarded() -> Iterator[TestClient]:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    paths = [f"/api/runs/{RUN}/{tail}" for tail in ("log", "log/raw", "log/stream", "output")]
    routes = [Route(path, ok) for path in [*paths, "/api/runs", f"/api/runs/{RUN}"]]
    routes.append(Route(f"/api/runs/{RUN}/stop", ok, methods=["POST"]))
    app = BearerAuth(Starlette(routes=routes), TOKEN, cluster_secret=SECRET)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("tail", ["log", "log/raw", "log/stream", "output"])
def test_the_credential_opens_the_cluster_routes(guarded: TestClient, tail: str) -> None:
    path = f"/api/runs/{RUN}/{tail}"
    assert guarded.get(path, headers={CLUSTER_HEADER: SECRET}).status_code == 200
    assert guarded.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert guarded.get(path).status_code == 401
    wrong = guarded.get(path, headers={CLUSTER_HEADER: "guess"})
    assert wrong.status_code == 401
    assert "guess" not in wrong.text and SECRET not in wrong.text
    # A wrong credential is refused even beside a good token: it is a forged forward.
    both = {CLUSTER_HEADER: "guess", "Authorization": f"Bearer {TOKEN}"}
    assert guarded.get(path, headers=both).status_code == 401
    assert guarded.post(f"/api/runs/{RUN}/stop", headers={CLUSTER_HEADER: SECRET}).status_code == (
        200
    )


@pytest.mark.parametrize("path", ["/api/runs", f"/api/runs/{RUN}"])
def test_the_credential_opens_nothing_else(guarded: TestClient, path: str) -> None:
    assert guarded.get(path, headers={CLUSTER_HEADER: SECRET}).status_code == 401
    assert guarded.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_every_cluster_route_is_a_route_and_refuses_a_credential_without_a_cluster(
    runyard: Runyard,
) -> None:
    """On SQLite there is no cluster secret: the header opens nothing."""
    app: FastAPI = create_app(runyard)
    templates = {route.path for route in iter_route_contexts(app.routes) if hasattr(route, "path")}
    assert templates >= CLUSTER_ROUTES
    assert runyard.cluster_secret is None
    with TestClient(app) as client:
        for template in sorted(CLUSTER_ROUTES):
            path = template.replace("{runId}", RUN)
            method = "POST" if path.endswith("/stop") else "GET"
            answer = client.request(method, path, headers={CLUSTER_HEADER: "anything"})
            assert answer.status_code == 401, path
