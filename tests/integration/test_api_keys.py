"""The keys routes over a real Runyard: real config file and SQLite store."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.domain.accounts import key_id_in

CONFIG = """
[daemon]
data_dir = "data"

[tasks.hello]
run = "echo hi"

[accounts.acme]
[accounts.zeta]
"""
TOKEN = "keys-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "runyard.toml"
    path.write_text(CONFIG, encoding="utf-8")
    environ = {"RUNYARD_TOKEN": TOKEN}
    runyard = Runyard(load_config(path, environ=environ), environ=environ)
    with TestClient(create_app(runyard)) as client:
        yield client


def test_create_list_revoke(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runyard.keys")
    created = client.post("/api/keys", json={"account": "acme", "label": "ci"}, headers=AUTH)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["$schema"].endswith("/schemas/CreatedKey.json")
    assert (body["account"], body["label"], body["revoked_at"]) == ("acme", "ci", None)
    assert key_id_in(body["key"]) == body["id"]
    v3 = client.post("/api/v3/list-automations", json={"key": body["key"]})
    assert v3.status_code == 200, v3.text

    listed = client.get("/api/keys", headers=AUTH).json()
    assert listed["$schema"].endswith("/schemas/KeysResponseBody.json")
    assert [(key["id"], key["label"]) for key in listed["keys"]] == [(body["id"], "ci")]
    assert "key" not in listed["keys"][0]

    revoked = client.post(f"/api/keys/{body['id']}/revoke", headers=AUTH)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["already_revoked"] is False
    assert revoked.json()["revoked_at"].endswith("Z")
    # Refused at once, not after the key cache's second.
    refused = client.post("/api/v3/list-automations", json={"key": body["key"]})
    assert refused.status_code == 401
    again = client.post(f"/api/keys/{body['id']}/revoke", headers=AUTH).json()
    assert again["already_revoked"] is True
    assert again["revoked_at"] == revoked.json()["revoked_at"]

    assert [record.getMessage() for record in caplog.records if record.name == "runyard.keys"] == [
        f"key {body['id']} (ci) created for account acme",
        f"key {body['id']} of account acme revoked",
    ]


@pytest.mark.parametrize(
    ("body", "location", "message"),
    [
        (
            {"account": "default"},
            "body.account",
            "account 'default' is not declared in {config} (declared accounts: acme, zeta)",
        ),
        ({"account": ""}, "body.account", "must be at least 1 characters long"),
        ({"account": 3}, "body.account", "must be a string"),
        ({"label": "x"}, "body.account", "is required"),
        ({"account": "acme", "extra": 1}, "body.extra", "is not an allowed field"),
    ],
)
def test_create_refuses_bad_bodies(
    client: TestClient, tmp_path: Path, body: dict[str, object], location: str, message: str
) -> None:
    answer = client.post("/api/keys", json=body, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    [error] = answer.json()["errors"]
    assert error["location"] == location
    assert error["message"] == message.format(config=tmp_path / "runyard.toml")
    assert client.get("/api/keys", headers=AUTH).json()["keys"] == []


@pytest.mark.parametrize("label", ["a\u0000b", "\udc80"])
def test_create_refuses_a_label_that_cannot_be_stored(client: TestClient, label: str) -> None:
    answer = client.post(
        "/api/keys",
        content=json.dumps({"account": "acme", "label": label}),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    [error] = answer.json()["errors"]
    assert error["location"] == "body.label"
    assert client.get("/api/keys", headers=AUTH).json()["keys"] == []


def test_revoke_an_unknown_key(client: TestClient) -> None:
    answer = client.post("/api/keys/01HZZZZZZZZZZZZZZZZZZZZZZZ/revoke", headers=AUTH)
    assert answer.status_code == 404
    assert answer.json()["detail"] == "No key named '01HZZZZZZZZZZZZZZZZZZZZZZZ' exists."


def test_keys_need_the_token(client: TestClient) -> None:
    assert client.get("/api/keys").status_code == 401
    assert client.post("/api/keys", json={"account": "acme"}).status_code == 401
    assert client.get("/api/keys", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_the_openapi_document_describes_the_keys_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/api/keys"]) == {"get", "post"}
    assert set(paths["/api/keys/{keyId}/revoke"]) == {"post"}
    for name in ("Key", "KeysResponseBody", "CreatedKey", "RevokedKey", "CreateKeyRequest"):
        assert client.get(f"/schemas/{name}.json").status_code == 200, name
