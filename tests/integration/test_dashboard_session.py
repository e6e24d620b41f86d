"""Dashboard sign-in over HTTP: cookies, CSRF, sign-out, `next`, and what a restart does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.web.session import safe_next

CONFIG = """
[daemon]
data_dir = "data"

[tasks.hello]
run = "echo hi"
cron = "0 3 * * *"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "runyard.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def _client(config: Path, base_url: str = "http://testserver") -> TestClient:
    runyard = Runyard(load_config(config, environ={}), environ={})
    return TestClient(create_app(runyard), base_url=base_url, follow_redirects=False)


@pytest.fixture
def client(config: Path) -> Iterator[TestClient]:
    with _client(config) as client:
        yield client


def _token(client: TestClient) -> str:
    runyard: Runyard = client.app.state.runyard  # type: ignore[attr-defined]
    return runyard.token


def sign_in(client: TestClient, next_path: str = "/") -> str:
    form = client.get("/login")
    login_token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert login_token is not None
    answer = client.post(
        "/login",
        data={"token": _token(client), "login_token": login_token.group(1), "next": next_path},
    )
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]


def csrf_of(client: TestClient, path: str = "/daemon") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/runs?status=failed", "/runs?status=failed"),
        ("/", "/"),
        ("", "/"),
        (None, "/"),
        ("https://elsewhere.example/", "/"),
        ("//elsewhere.example/x", "/"),
        ("/\\elsewhere.example", "/"),
        ("runs", "/"),
        ("/runs\n", "/"),
    ],
)
def test_next_is_kept_only_when_it_is_a_local_path(given: str | None, kept: str) -> None:
    assert safe_next(given) == kept


def test_the_session_cookie_is_http_only_strict_and_not_secure_over_http(
    client: TestClient,
) -> None:
    assert sign_in(client, "/runs") == "/runs"
    cookie = client.cookies.jar
    session = next(item for item in cookie if item.name == "runyard_session")
    assert not session.secure


def test_the_session_cookie_is_secure_under_https(config: Path) -> None:
    with _client(config, "https://testserver") as client:
        form = client.get("/login")
        assert "Secure" in form.headers["set-cookie"]  # the sign-in form's token too
        login_token = re.search(r'name="login_token" value="([^"]+)"', form.text)
        assert login_token is not None
        answer = client.post(
            "/login",
            data={"token": _token(client), "login_token": login_token.group(1), "next": "/"},
        )
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "runyard_session=" in cookie
        for flag in ("HttpOnly", "Secure", "SameSite=strict"):
            assert flag in cookie


def test_a_form_without_the_csrf_token_changes_nothing(client: TestClient) -> None:
    sign_in(client)
    for data in ({}, {"csrf": "forged"}):
        answer = client.post("/tasks/hello/pause", data=data)
        assert answer.status_code == 403
        assert "Form refused" in answer.text
    assert "Pause schedule" in client.get("/tasks/hello").text
    answer = client.post("/tasks/hello/pause", data={"csrf": csrf_of(client)})
    assert answer.status_code == 303
    assert "Resume schedule" in client.get("/tasks/hello").text


def test_a_refresh_in_flight_does_not_take_the_flash_meant_for_the_next_page(
    client: TestClient,
) -> None:
    sign_in(client)
    answer = client.post("/tasks/hello/pause", data={"csrf": csrf_of(client)})
    assert answer.status_code == 303
    # The old page's script refreshes <main> (a run ended) before the redirect is followed.
    refresh = client.get("/tasks/hello", headers={"X-Runyard-Fragment": "1"})
    assert refresh.status_code == 200 and "Schedule paused." not in refresh.text
    assert "Schedule paused." in client.get(answer.headers["location"]).text
    assert "Schedule paused." not in client.get(answer.headers["location"]).text  # shown once


def test_sign_in_needs_the_forms_own_token(client: TestClient) -> None:
    answer = client.post("/login", data={"token": _token(client), "next": "/"})
    assert answer.status_code == 403
    assert "runyard_session" not in client.cookies


def test_signing_out_ends_the_session_on_the_server(client: TestClient) -> None:
    sign_in(client)
    stolen = client.cookies["runyard_session"]
    answer = client.post("/logout", data={"csrf": csrf_of(client)})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    # The old cookie, replayed, opens nothing.
    client.cookies.set("runyard_session", stolen)
    answer = client.get("/daemon")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fdaemon"


def test_sessions_do_not_survive_a_restart(config: Path) -> None:
    with _client(config) as first:
        sign_in(first)
        cookie = first.cookies["runyard_session"]
        assert first.get("/daemon").status_code == 200
    with _client(config) as second:
        second.cookies.set("runyard_session", cookie)
        assert second.get("/daemon").status_code == 303


def test_the_bearer_token_opens_the_api_but_no_page(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {_token(client)}"}
    assert client.get("/api/tasks", headers=headers).status_code == 200
    assert client.get("/", headers=headers).status_code == 303
    # And a session opens no API route.
    sign_in(client)
    assert client.get("/api/tasks").status_code == 401


def test_every_page_has_the_policy_and_escapes_a_bad_query(client: TestClient) -> None:
    sign_in(client)
    for path in ("/", "/runs", "/tasks/hello", "/accounts", "/daemon", "/runs/nope"):
        answer = client.get(path)
        assert answer.status_code in (200, 404), path
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
    answer = client.get("/runs", params={"search": "<script>alert(1)</script>"})
    assert answer.status_code == 200
    assert "<script>alert(1)" not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
