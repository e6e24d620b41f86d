"""Large trigger bodies (issue 9, item 4): parsed by a worker process, answered as small ones.

A body from STAGE_FROM bytes goes to a worker process that parses it and
writes its input data to the run's files. Whatever it holds, the answer must
be the one the same content gets in a small body; and `max_queued_input`
refuses with 429 in each API's error shape, recording nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runyard.app import Runyard
from runyard.body_parser import STAGE_FROM

CONFIG = """
[daemon]
data_dir = "data"
shutdown_timeout = "5s"

[accounts.default]
max_queued_input = "150kb"

[tasks.echo]
automation = "Echo"
run = 'cat "$RUNYARD_INPUT_CSV" | head -1'

[tasks.held]
automation = "Held"
run = "sleep 30"
graceful_stop = "1s"
max_concurrent = 1
max_queued_input = "150kb"

[tasks.other]
automation = "Other"
run = "sleep 30"
graceful_stop = "1s"
max_concurrent = 1
"""
PROBLEM = "application/problem+json"


def table(tag: str, rows: int) -> list[list[str]]:
    return [[f"{tag}{row}", "x,y", 'q"q'] for row in range(rows)]


def large_table(tag: str = "r") -> list[list[str]]:
    """Return a table whose JSON is over STAGE_FROM bytes (and over the inline limit)."""
    data = table(tag, 4000)
    assert len(json.dumps(data)) > STAGE_FROM
    return data


def input_files(runyard: Runyard) -> list[Path]:
    return sorted(runyard.engine.inputs.root.rglob("*.json"))


def post(client: TestClient, path: str, body: bytes | dict[str, Any]) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


# ----- REST ----------------------------------------------------------------------


def test_rest_large_body_runs_with_its_input_and_shows_it_on_the_run_only(
    client: TestClient, runyard: Runyard
) -> None:
    data = large_table()
    answer = post(client, "/api/tasks/echo/run?wait=true", {"data": data})
    assert answer.status_code == 201, answer.text
    run = answer.json()
    assert run["end_reason"] == "success", run["description"]
    assert runyard.bodies._pool is not None  # parsed by a worker process
    assert input_files(runyard) == [runyard.engine.inputs.json_path(run["id"])]
    detail = client.get(f"/api/runs/{run['id']}").json()
    assert detail["input_data"] == [data]
    listed = client.get("/api/runs").json()["runs"]
    assert [item["id"] for item in listed] == [run["id"]]
    assert "input_data" not in listed[0] and "output_data" not in listed[0]
    log = client.get(f"/api/runs/{run['id']}/log").json()["lines"]
    assert [line["text"] for line in log if line["stream"] == "out"] == ['r0,"x,y","q""q"']


def padded(body: dict[str, Any]) -> bytes:
    """Return `body` as JSON over STAGE_FROM bytes, padded with blanks (JSON allows them)."""
    text = json.dumps(body)
    return (text[:-1] + " " * STAGE_FROM + "}").encode()


@pytest.mark.parametrize(
    ("name", "small", "large"),
    [
        ("malformed JSON", b'{"data": [["a"]] x}', b'{"data": [["a"]]' + b" " * STAGE_FROM + b"x}"),
        ("not UTF-8", b'{"data": [["\xff"]]}', b'{"data": [["\xff"]]' + b" " * STAGE_FROM + b"}"),
        ("shape", b'{"data": [1, 2]}', padded({"data": [1, 2]})),
        ("a cell", b'{"data": [[{"a": 1}]]}', padded({"data": [[{"a": 1}]]})),
        ("NUL in a cell", b'{"data": [["a\\u0000"]]}', padded({"data": [["a\u0000"]]})),
        ("unknown member", b'{"data": [["a"]], "nope": 1}', padded({"data": [["a"]], "nope": 1})),
        ("params", b'{"params": {"x": 1}, "data": [["a"]]}', padded({"params": {"x": 1}})),
        ("not an object", b"[1, 2]", b"[1, 2" + b" " * STAGE_FROM + b"]"),
    ],
)
def test_rest_large_body_refused_as_the_small_one(
    client: TestClient, runyard: Runyard, name: str, small: bytes, large: bytes
) -> None:
    assert len(large) >= STAGE_FROM > len(small)
    small_answer = post(client, "/api/tasks/echo/run", small)
    large_answer = post(client, "/api/tasks/echo/run", large)
    assert small_answer.status_code in (400, 422), small_answer.text
    assert large_answer.status_code == small_answer.status_code, large_answer.text
    assert large_answer.headers["content-type"].startswith(PROBLEM)
    assert large_answer.json()["detail"] == small_answer.json()["detail"]
    assert client.get("/api/runs").json()["total"] == 0
    assert input_files(runyard) == []


def test_rest_max_queued_input_answers_429_and_records_nothing(
    client: TestClient, runyard: Runyard
) -> None:
    assert post(client, "/api/tasks/held/run", {}).status_code == 201  # holds the slot
    data = large_table()
    assert post(client, "/api/tasks/held/run", {"data": data}).status_code == 201  # queued
    files = input_files(runyard)
    refused = post(client, "/api/tasks/held/run", {"data": data})
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"].startswith(PROBLEM)
    detail = refused.json()["detail"]
    assert "task 'held'" in detail and "max_queued_input of 153600 bytes" in detail
    assert client.get("/api/runs").json()["total"] == 2
    assert input_files(runyard) == files  # the refused body's file is gone


# ----- v3 ----------------------------------------------------------------------------


def test_v3_large_body_triggers_with_its_input(
    client: TestClient, runyard: Runyard, key: str
) -> None:
    data = large_table()
    answer = post(client, "/api/v3/trigger", {"key": key, "name": "Echo", "data": data})
    assert answer.status_code == 200, answer.text
    [run] = client.get("/api/runs").json()["runs"]
    assert input_files(runyard) == [runyard.engine.inputs.json_path(run["id"])]
    assert client.get(f"/api/runs/{run['id']}").json()["input_data"] == [data]


@pytest.mark.parametrize(
    ("small", "large"),
    [
        (b'{"name": "Echo", "data": [[1, [2]]]}', padded({"name": "Echo", "data": [[1, [2]]]})),
        (b'{"name": "Echo", "data": 5}', padded({"name": "Echo", "data": 5})),
        (b"[1]", b"[1" + b" " * STAGE_FROM + b"]"),
        (b'{"name": "Echo", "data": [["a"]] x}', b'{"name": "Echo"' + b" " * STAGE_FROM + b"x}"),
    ],
)
def test_v3_large_body_refused_as_the_small_one(
    client: TestClient, runyard: Runyard, key: str, small: bytes, large: bytes
) -> None:
    def keyed(body: bytes) -> bytes:
        if not body.startswith(b"{"):
            return body
        return b'{"key": ' + json.dumps(key).encode() + b", " + body[1:]

    small_answer = post(client, "/api/v3/trigger", keyed(small))
    large_answer = post(client, "/api/v3/trigger", keyed(large))
    assert small_answer.status_code == 400, small_answer.text
    assert large_answer.status_code == 400, large_answer.text
    small_message = small_answer.json()["message"]
    large_message = large_answer.json()["message"]
    # A syntax error names its column, which the padding moves.
    assert large_message.split(" (line")[0] == small_message.split(" (line")[0]
    assert client.get("/api/runs").json()["total"] == 0
    assert input_files(runyard) == []


def test_v3_max_queued_input_of_the_account_answers_429(
    client: TestClient, runyard: Runyard, key: str
) -> None:
    for name in ("Held", "Other"):  # hold both slots
        assert post(client, "/api/v3/trigger", {"key": key, "name": name}).status_code == 200
    data = large_table()
    queued = post(client, "/api/v3/trigger", {"key": key, "name": "Other", "data": data})
    assert queued.json()["status"] == "queued"
    files = input_files(runyard)
    refused = post(client, "/api/v3/trigger", {"key": key, "name": "Other", "data": data})
    assert refused.status_code == 429, refused.text
    body = refused.json()
    assert body["status"] == "error"
    assert "account 'default'" in body["message"] and "max_queued_input" in body["message"]
    assert input_files(runyard) == files
    assert client.get("/api/runs").json()["total"] == 3


def test_rest_large_body_without_the_token_is_refused_unparsed(
    client: TestClient, runyard: Runyard
) -> None:
    body = json.dumps({"data": large_table()}).encode()
    answer = client.post(
        "/api/tasks/echo/run",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer wrong"},
    )
    assert answer.status_code == 401
    assert runyard.bodies._pool is None  # no worker was asked to parse it
    assert input_files(runyard) == []
