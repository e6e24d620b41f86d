"""Task secrets: the process gets them; the API, the log and the run's description never show them.

A real Runyard (config file, SQLite store, processes) behind the real HTTP app.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.domain.models import TaskDefinition
from runyard.engine.environment import MIN_MASKED_LENGTH, load_secrets, mask_values

SECRET = "s3cr3t-Value-9f2"
FILE_SECRET = "from-the-file-7c1"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


CONFIG = f"""
[daemon]
data_dir = "data"

[defaults]
secrets = {{ SHARED = "shared-secret-1" }}

[tasks.leaky]
# Prints its secrets every way a script might, then fails with one on stderr.
run = '''
[ "$(printf %s "$API_KEY" | sha256sum | cut -c1-64)" = "{digest(SECRET)}" ] \\
  && echo "the process got the key"
[ "$(printf %s "$FROM_FILE" | sha256sum | cut -c1-64)" = "{digest(FILE_SECRET)}" ] \\
  && echo "the process got the file's key"
echo "key=$API_KEY file=$FROM_FILE shared=$SHARED short=$PIN"
printf '%s\\n' "$API_KEY$API_KEY"
echo "stderr: $API_KEY" >&2
exit 3
'''
secrets = {{ API_KEY = "{SECRET}", PIN = "12" }}
secrets_file = "secret.env"
description = "prints its secrets"
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Runyard, TestClient]]:
    (tmp_path / "secret.env").write_text(f"FROM_FILE={FILE_SECRET}\n", encoding="utf-8")
    path = tmp_path / "runyard.toml"
    path.write_text(CONFIG, encoding="utf-8")
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    runyard = Runyard(load_config(path, environ=environ), environ=environ)
    with TestClient(create_app(runyard)) as client:
        client.headers["Authorization"] = f"Bearer {runyard.token}"
        yield runyard, client


def test_the_process_gets_secrets_and_every_output_masks_them(
    served: tuple[Runyard, TestClient],
) -> None:
    runyard, client = served
    response = client.post("/api/tasks/leaky/run", params={"wait": "true"})
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    assert run["end_reason"] == "failed"
    lines = [line["text"] for line in client.get(f"/api/runs/{run['id']}/log").json()["lines"]]
    assert lines == [
        "the process got the key",
        "the process got the file's key",
        "key=*** file=*** shared=*** short=12",  # under 4 characters: not masked
        "******",
        "stderr: ***",
    ]
    seen = [
        client.get(f"/api/runs/{run['id']}/log/raw").text,
        client.get(f"/api/runs/{run['id']}").text,  # the description quotes stderr
        client.get("/api/tasks").text,
        client.get("/api/tasks/leaky").text,
        client.get("/api/runs").text,
        repr(runyard.task("leaky")),
    ]
    for text in seen:
        for secret in (SECRET, FILE_SECRET, "shared-secret-1"):
            assert secret not in text
    assert "stderr: ***" in client.get(f"/api/runs/{run['id']}").json()["description"]


def test_the_dashboard_shows_no_secret(served: tuple[Runyard, TestClient]) -> None:
    runyard, client = served
    run = client.post("/api/tasks/leaky/run", params={"wait": "true"}).json()
    client.headers.pop("Authorization")
    form = client.get("/login")
    login_token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert login_token is not None
    signed_in = client.post(
        "/login",
        data={"token": runyard.token, "login_token": login_token.group(1), "next": "/"},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303, signed_in.text
    for page in ("/", "/runs", f"/runs/{run['id']}", "/tasks/leaky", "/daemon"):
        answer = client.get(page)
        assert answer.status_code == 200, page
        for secret in (SECRET, FILE_SECRET, "shared-secret-1"):
            assert secret not in answer.text, page


def test_a_missing_secrets_file_fails_the_start_without_its_contents(
    served: tuple[Runyard, TestClient], tmp_path: Path
) -> None:
    _runyard, client = served
    (tmp_path / "secret.env").unlink()
    run = client.post("/api/tasks/leaky/run", params={"wait": "true"}).json()
    assert run["end_reason"] == "start_failed"
    assert "secret.env" in run["description"]


def test_mask_values_longest_first_and_line_by_line() -> None:
    masked = mask_values({"A": "abcd", "B": "abcdefgh", "C": "one line\ntwo line", "D": "abc"})
    assert masked == (b"abcdefgh", b"one line", b"two line", b"abcd")
    assert MIN_MASKED_LENGTH == 4


def test_secrets_file_then_secrets(tmp_path: Path) -> None:
    file = tmp_path / "s.env"
    file.write_text("A=from-file\nB=file-b\n", encoding="utf-8")
    task = TaskDefinition(name="t", run="x", secrets=(("A", "inline"),), secrets_file=str(file))
    assert load_secrets(task) == {"A": "inline", "B": "file-b"}
    assert "inline" not in repr(task)
