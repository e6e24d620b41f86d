"""/openapi.json says what the API does: per-task triggers, declared filter values, events."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config

CONFIG = """
[daemon]
data_dir = "data"

[tasks.greet]
run = 'echo "hello $WHO"'

[[tasks.greet.params]]
name = "who"
required = true

[[tasks.greet.params]]
name = "mode"
default = "fast"
choices = ["fast", "slow", "3", "true", "2.5", "2.0"]

[tasks.plain]
run = "true"
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "runyard.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def client(config_path: Path) -> Iterator[TestClient]:
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    runyard = Runyard(load_config(config_path, environ=environ), environ=environ)
    with TestClient(create_app(runyard), headers={"Authorization": f"Bearer {runyard.token}"}) as c:
        yield c


def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def trigger_body(client: TestClient, task: str) -> dict[str, Any]:
    operation = document(client)["paths"][f"/api/tasks/{task}/run"]["post"]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


def test_each_task_has_a_trigger_operation_with_its_own_params(client: TestClient) -> None:
    paths = document(client)["paths"]
    assert "/api/tasks/{taskName}/run" not in paths
    operation = paths["/api/tasks/greet/run"]["post"]
    assert operation["operationId"] == "trigger_greet"
    assert [parameter["name"] for parameter in operation["parameters"]] == ["wait", "wait_timeout"]
    assert operation["requestBody"]["required"] is True
    body = trigger_body(client, "greet")
    assert body["required"] == ["params"] and body["additionalProperties"] is False
    params = body["properties"]["params"]
    assert params["required"] == ["who"]
    assert params["additionalProperties"] is False
    assert params["properties"]["who"]["type"] == ["string", "number", "boolean"]
    # Numbers and booleans are taken as their text: those whose text is a choice are choices.
    # 2.0 is not: JSON Schema holds 2 equal to it, and 2 reads "2".
    assert params["properties"]["mode"]["enum"] == [
        "fast",
        "slow",
        "3",
        3,
        "true",
        True,
        "2.5",
        2.5,
        "2.0",
    ]


def test_a_task_without_required_params_may_be_triggered_without_a_body(
    client: TestClient,
) -> None:
    operation = document(client)["paths"]["/api/tasks/plain/run"]["post"]
    assert operation["requestBody"]["required"] is False
    body = trigger_body(client, "plain")
    [object_body, null] = body["anyOf"]
    assert null == {"type": "null"}
    assert object_body["properties"]["params"]["properties"] == {}


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"who": "x"}, 201),
        ({"who": 1, "mode": 3}, 201),
        ({"who": "x", "mode": True}, 201),
        ({}, 422),  # the schema requires who
        ({"who": "x", "whom": "y"}, 422),  # and allows no other name
        ({"who": "x", "mode": "medium"}, 422),  # and lists the choices
    ],
)
def test_the_behaviour_matches_the_trigger_schema(
    client: TestClient, params: dict[str, object], status: int
) -> None:
    response = client.post("/api/tasks/greet/run", json={"params": params})
    assert response.status_code == status, response.text


def test_a_reload_that_changes_the_tasks_changes_the_document(
    client: TestClient, config_path: Path
) -> None:
    assert "/api/tasks/plain/run" in document(client)["paths"]
    config_path.write_text(
        CONFIG.replace("[tasks.plain]", "[tasks.other]").replace(
            'name = "who"\nrequired = true', 'name = "who"\ndefault = "you"'
        ),
        encoding="utf-8",
    )
    assert client.post("/api/daemon/reload").status_code == 200
    paths = document(client)["paths"]
    assert "/api/tasks/plain/run" not in paths and "/api/tasks/other/run" in paths
    assert "required" not in trigger_body(client, "greet")["anyOf"][0]["properties"]["params"]


def test_public_routes_need_no_token(client: TestClient) -> None:
    body = document(client)
    assert body["security"] == [{"bearer": []}]
    assert body["paths"]["/health"]["get"]["security"] == []
    assert body["paths"]["/schemas/{name}.json"]["get"]["security"] == []
    assert "security" not in body["paths"]["/api/tasks"]["get"]


def test_error_instance_is_a_uri_reference(client: TestClient) -> None:
    instance = document(client)["components"]["schemas"]["ErrorModel"]["properties"]["instance"]
    assert instance["format"] == "uri-reference"


def test_the_status_filter_declares_its_values(client: TestClient) -> None:
    [status] = [
        parameter
        for parameter in document(client)["paths"]["/api/runs"]["get"]["parameters"]
        if parameter["name"] == "status"
    ]
    assert status["schema"]["enum"][:4] == ["", "pending", "running", "ended"]
    assert {"success", "failed", "start_failed"} <= set(status["schema"]["enum"])
    for value in status["schema"]["enum"]:
        assert client.get("/api/runs", params={"status": value}).status_code == 200, value


def test_streams_describe_their_events(client: TestClient) -> None:
    paths = document(client)["paths"]
    log = paths["/api/runs/{runId}/log/stream"]["get"]["responses"]["200"]["content"]
    line, done = log["text/event-stream"]["schema"]["anyOf"]
    assert line["properties"]["event"] == {"enum": ["line"]}
    assert line["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/LogLine"}
    assert done["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/Run"}
    events = paths["/api/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    assert events["schema"]["properties"]["event"]["enum"] == [
        "run.created",
        "run.started",
        "run.ended",
    ]
