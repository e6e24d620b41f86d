"""Input the store cannot hold, refused where it comes in: REST and v3, SQLite and PostgreSQL.

Text with NUL or a lone surrogate is answered 400 for that request only,
naming the field; numbers out of the databases' range and digits int()
cannot read are answered 4xx, never 500.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

CONFIG = """
[daemon]
data_dir = "data"
shutdown_timeout = "5s"

[tasks.greet]
run = 'echo "hello $WHO"'

[[tasks.greet.params]]
name = "who"
env = "WHO"
default = "world"

[accounts.default]
"""

PROBLEM = "application/problem+json"
SURROGATE = "contains a lone surrogate (\\udc80) at character 1, which is not valid Unicode"
NUL_AT = "contains a NUL character (\\u0000) at character {}, which cannot be stored"
JSON = {"Content-Type": "application/json"}
MAX_OFFSET = 2**63 - 1  # the largest a signed 64-bit integer holds


@pytest.fixture
def runyard_environ(store_url: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUNYARD_DATABASE_URL": store_url}


def run_count(client: TestClient) -> int:
    total: int = client.get("/api/runs").json()["total"]
    return total


def assert_text_refused(
    response: Any, location: str, message: str, value: object
) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["title"] == "Bad Request"
    assert body["errors"] == [{"location": location, "message": message, "value": value}]
    assert body["detail"] == f"The request holds text that cannot be stored: {location} {message}."
    return body


# JSON bodies are written by hand: a lone surrogate must reach the server as
# the escape "\udc80", which no JSON encoder writes for a str.
@pytest.mark.parametrize(
    ("body", "location", "message", "value"),
    [
        pytest.param(
            '{"data": [["a"], ["b", "\\udc80"]]}', "body.data[1][1]", SURROGATE, "\\udc80", id="2d"
        ),
        pytest.param(
            '{"data": [[["a"]], [["b", "x\\u0000"]]]}',
            "body.data[1][0][1]",
            NUL_AT.format(2),
            "x\\u0000",
            id="3d-nul",
        ),
        pytest.param(
            '{"params": {"who": "\\udc80"}}', "body.params.who", SURROGATE, "\\udc80", id="param"
        ),
        pytest.param(
            '{"params": {"who": "\\u0000"}}',
            "body.params.who",
            NUL_AT.format(1),
            "\\u0000",
            id="param-nul-would-reach-the-environment",
        ),
        pytest.param(
            '{"params": {"\\udc80": "x"}}',
            "body.params.\\udc80",
            f"the param name {SURROGATE}",
            "\\udc80",
            id="param-name",
        ),
        # An unknown field is refused anyway; its name is what cannot be read.
        pytest.param('{"\\udc80": 1}', "body", SURROGATE, "\\udc80", id="field-name"),
    ],
)
def test_rest_trigger_refuses_text_that_cannot_be_stored(
    client: TestClient, body: str, location: str, message: str, value: object
) -> None:
    response = client.post("/api/tasks/greet/run", content=body.encode(), headers=JSON)
    assert_text_refused(response, location, message, value)
    assert run_count(client) == 0
    # The next request is not touched by it.
    assert client.post("/api/tasks/greet/run", json={"params": {"who": "ok"}}).status_code == 201


@pytest.mark.parametrize(
    ("path", "location", "position"),
    [
        ("/api/runs?search=%00", "query.search", 1),
        ("/api/runs?task_name=greet%00", "query.task_name", 6),
        ("/api/runs?status=%00", "query.status", 1),
        ("/api/tasks/greet/runs?search=a%00", "query.search", 2),
        ("/api/tasks/gr%00eet/runs", "path.taskName", 3),
        ("/api/tasks/greet%00", "path.taskName", 6),
        ("/api/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV%00", "path.runId", 27),
        ("/api/runs/%00/log", "path.runId", 1),
        ("/api/runs/%00/log/raw", "path.runId", 1),
        ("/api/runs/%00/log/stream", "path.runId", 1),
    ],
)
def test_nul_in_a_query_or_path_is_refused(
    client: TestClient, path: str, location: str, position: int
) -> None:
    response = client.get(path)
    body = assert_text_refused(response, location, NUL_AT.format(position), _shown(path, location))
    # `instance` is the path as sent: a URI reference, NUL percent-encoded.
    assert body["instance"] == path.split("?")[0]


def _shown(path: str, location: str) -> str:
    if location.startswith("query."):
        return path.split("=", 1)[1].replace("%00", "\\u0000")
    return path.split("/")[3].replace("%00", "\\u0000")


def test_nul_in_a_run_id_is_refused_on_stop(client: TestClient) -> None:
    response = client.post("/api/runs/a%00/stop")
    assert_text_refused(response, "path.runId", NUL_AT.format(2), "a\\u0000")


def test_the_viewer_finds_no_run_for_an_id_or_secret_with_nul(client: TestClient) -> None:
    # The viewer reveals nothing about which runs exist: such an id is not found.
    for path in (
        "/view/a%00/state?password=x",
        "/view/01ARZ3NDEKTSV4RRFFQ69G5FAV/state?password=%00",
    ):
        response = client.get(path)
        assert response.status_code == 404, response.text


@pytest.mark.parametrize("path", ["/api/runs", "/api/tasks/greet/runs"])
def test_offset_is_bounded_by_what_the_databases_take(client: TestClient, path: str) -> None:
    client.post("/api/tasks/greet/run")
    largest = client.get(path, params={"offset": MAX_OFFSET, "search": "greet"})
    assert largest.status_code == 200, largest.text
    assert largest.json()["runs"] == []
    response = client.get(path, params={"offset": MAX_OFFSET + 1})
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {
            "location": "query.offset",
            "message": "must be less than or equal to 9223372036854775807",
            "value": MAX_OFFSET + 1,
        }
    ]


# ----- v3 ----------------------------------------------------------------------


def v3(client: TestClient, endpoint: str, body: str) -> Any:
    return client.post(f"/api/v3/{endpoint}", content=body.encode(), headers=JSON)


@pytest.mark.parametrize(
    ("endpoint", "fields", "message"),
    [
        pytest.param(
            "trigger",
            '"name": "greet", "data": [["a", "\\udc80"]]',
            f"Data cell at table 1, row 1, column 2 {SURROGATE}.",
            id="trigger-data",
        ),
        pytest.param(
            "trigger",
            '"name": "greet", "data": [[["a"]], [["\\u0000"]]]',
            f"Data cell at table 2, row 1, column 1 {NUL_AT.format(1)}.",
            id="trigger-data-3d-nul",
        ),
        pytest.param("trigger", '"name": "\\udc80"', f"name {SURROGATE}.", id="trigger-name"),
        pytest.param(
            "run-data", '"name": "gr\\u0000"', f"name {NUL_AT.format(3)}.", id="run-data-name"
        ),
        pytest.param("run-reports", '"count": "\\udc80"', f"count {SURROGATE}.", id="count"),
    ],
)
def test_v3_refuses_text_that_cannot_be_stored(
    client: TestClient, key: str, endpoint: str, fields: str, message: str
) -> None:
    response = v3(client, endpoint, f'{{"key": "{key}", {fields}}}')
    assert response.status_code == 400, response.text
    assert response.json() == {"status": "error", "message": message}
    assert run_count(client) == 0
    assert v3(client, "trigger", f'{{"key": "{key}", "name": "greet"}}').status_code == 200


@pytest.mark.parametrize(
    ("endpoint", "body", "message"),
    [
        pytest.param(
            "trigger", '{"key": "\\udc80", "name": "greet"}', f"key {SURROGATE}.", id="key"
        ),
        pytest.param(
            "remaining-runtime", '{"key": "k\\u0000"}', f"key {NUL_AT.format(2)}.", id="key-nul"
        ),
        pytest.param("stop", '{"pid": "1", "pw": "\\udc80"}', f"pw {SURROGATE}.", id="pw"),
        pytest.param(
            "stop", '{"pid": "1", "pw": "a.b\\u0000"}', f"pw {NUL_AT.format(4)}.", id="pw-nul"
        ),
        pytest.param("stop", '{"pid": "\\udc80", "pw": "x"}', f"pid {SURROGATE}.", id="pid"),
    ],
)
def test_v3_refuses_keys_and_secrets_that_cannot_be_hashed(
    client: TestClient, endpoint: str, body: str, message: str
) -> None:
    response = v3(client, endpoint, body)
    assert response.status_code == 400, response.text
    assert response.json() == {"status": "error", "message": message}


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        ('"²"', '"²"'),  # str.isdigit() says yes; int() says no
        ('"٣"', '"٣"'),  # an Arabic-Indic three: int() would read it as 3
        ('"1 2"', '"1 2"'),
        ('"-3"', '"-3"'),
    ],
)
def test_v3_count_takes_ascii_digits_only(
    client: TestClient, key: str, count: str, shown: str
) -> None:
    response = v3(client, "run-reports", f'{{"key": "{key}", "count": {count}}}')
    assert response.status_code == 400, response.text
    assert response.json() == {
        "status": "error",
        "message": f"count must be a whole number of at least 1, got {shown}.",
    }


def test_v3_count_of_many_digits_is_served_as_the_maximum(client: TestClient, key: str) -> None:
    # More digits than int() reads (4,300): still a number past the maximum.
    response = v3(client, "run-reports", f'{{"key": "{key}", "count": " 0{"9" * 5000} "}}')
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success", "data": {"reports": []}}


@pytest.mark.parametrize("pid", ['"²"', '"1e3"', f'"{"9" * 5000}"'])
def test_v3_stop_with_a_pid_that_is_not_ascii_digits_matches_no_run(
    client: TestClient, key: str, pid: str
) -> None:
    link = v3(client, "trigger", f'{{"key": "{key}", "name": "greet"}}').json()
    password = parse_qs(urlsplit(link["OPEN LINK IN BROWSER"]).query)["password"][0]
    response = v3(client, "stop", f'{{"pid": {pid}, "pw": "{password}"}}')
    assert response.status_code == 404, response.text
    assert response.json()["message"] == "Run not found: pid and pw do not match a run."
