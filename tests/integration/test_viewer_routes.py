"""`/view/{runId}`: the run viewer's page, state and log, opened with the run's secret only."""

from __future__ import annotations

import json
import os
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.domain.accounts import hash_secret
from runyard.store.keys import KeyStore
from runyard.store.schema import runs

CONFIG = """
[daemon]
data_dir = "data"
shutdown_timeout = "5s"

[tasks.sheet]
automation = "Sheet"
run = '''
echo one
echo two >&2
printf 'a,b\\n1,2\\n' > "$RUNYARD_OUTPUT_DIR/sheet.csv"
'''

[tasks.slow]
automation = "Slow"
run = "echo waiting; sleep 30"
graceful_stop = "2s"

[tasks.plain]
run = "echo hi"
"""

UNKNOWN_RUN = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
NOT_FOUND_JSON = {"status": "error", "message": "Run not found."}
STATE_KEYS = {
    "id",
    "automation",
    "task_name",
    "status",
    "phase",
    "end_reason",
    "exit_code",
    "created_at",
    "start_at",
    "end_at",
    "duration_ms",
    "description",
    "input_data",
    "output_data",
}


@dataclass(frozen=True)
class Link:
    """A viewer link taken apart: the run's path, and its password."""

    url: str
    path: str
    password: str
    host: str


@pytest.fixture
def client(runyard: Runyard) -> Iterator[TestClient]:
    # No bearer token: the viewer must work without one.
    with TestClient(create_app(runyard)) as client:
        yield client


def trigger(client: TestClient, key: str, name: str, data: object = None) -> Link:
    body: dict[str, Any] = {"key": key, "name": name}
    if data is not None:
        body["data"] = data
    response = client.post("/api/v3/trigger", json=body)
    assert response.status_code == 200, response.text
    url = response.json()["OPEN LINK IN BROWSER"]
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    return Link(url=url, path=parts.path, password=query["password"], host=query["host"])


def state(client: TestClient, link: Link) -> dict[str, Any]:
    response = client.get(f"{link.path}/state", params={"password": link.password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ended_state(client: TestClient, link: Link, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (body := state(client, link))["phase"] != "ended":
        assert time.monotonic() < deadline, "the run did not end in time"
        time.sleep(0.05)
    return body


def read_events(response: Any) -> list[tuple[str, Any]]:
    """Return (event, data) of an SSE response, up to and including `done`."""
    events: list[tuple[str, Any]] = []
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((kind, json.loads(line.removeprefix("data: "))))
            if kind == "done":
                return events
    return events


@pytest.mark.parametrize(
    ("daemon_lines", "base"),
    [
        # Where the daemon listens, when that is a specific address.
        ("port = 9555", "http://127.0.0.1:9555"),
        # external_url wins, with its own port (or the daemon's when it has none).
        (
            'external_url = "https://runs.example.com:8443/yard/"',
            "https://runs.example.com:8443/yard",
        ),
        # Listening everywhere: the address the request came in on.
        ('host = "0.0.0.0"\nport = 9556', "http://testserver"),
    ],
)
def test_link_is_built_on_where_the_daemon_is_reached(
    tmp_path: Path, daemon_lines: str, base: str
) -> None:
    path = tmp_path / "runyard.toml"
    path.write_text(CONFIG.replace("[daemon]", f"[daemon]\n{daemon_lines}"), encoding="utf-8")
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    runyard = Runyard(load_config(path, environ=environ), environ=environ)
    with TestClient(create_app(runyard)) as client:
        _key, plaintext = KeyStore(runyard.store._transaction).create(
            "default", "link tests", datetime.now(UTC)
        )
        link = trigger(client, plaintext, "plain")
    run_id = link.path.rsplit("/", 1)[1]
    port = urlsplit(base).port or runyard.config.daemon.port
    assert link.url == (
        f"{base}/view/{run_id}?host={link.host}&port={port}"
        f"&password={link.password}&taskId={zlib.crc32(b'plain')}"
    )
    assert re.fullmatch(r"c-00\d\d-runyard", link.host)
    # The run's id, a dot, then 192 random bits of URL-safe base64.
    assert re.fullmatch(rf"{run_id}\.[A-Za-z0-9_-]{{32}}", link.password)


def test_page_opens_with_the_secret_and_keeps_it_private(client: TestClient, key: str) -> None:
    link = trigger(client, key, "Sheet")
    response = client.get(link.url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy and "unsafe" not in policy
    assert link.password not in response.text
    assert '<script src="static/viewer.js"' in response.text


@pytest.mark.parametrize(
    "query",
    [{"password": "wrong"}, {}, {"password": ""}],
    ids=["wrong", "missing", "empty"],
)
def test_a_bad_secret_answers_404_everywhere(
    client: TestClient, key: str, query: dict[str, str]
) -> None:
    link = trigger(client, key, "Sheet")
    page = client.get(link.path, params={**query, "host": link.host})
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "Run not found" in page.text
    assert page.headers["cache-control"] == "no-store"
    for suffix in ("/state", "/log"):
        response = client.get(link.path + suffix, params=query)
        assert response.status_code == 404, suffix
        assert response.json() == NOT_FOUND_JSON


@pytest.mark.parametrize("run_id", [UNKNOWN_RUN, "x" * 300, "not a ULID"])
def test_unknown_runs_look_like_a_bad_secret(client: TestClient, key: str, run_id: str) -> None:
    link = trigger(client, key, "Sheet")  # a real secret, of another run
    page = client.get(f"/view/{run_id}", params={"password": link.password})
    assert page.status_code == 404 and "Run not found" in page.text
    response = client.get(f"/view/{run_id}/state", params={"password": link.password})
    assert response.status_code == 404 and response.json() == NOT_FOUND_JSON


def test_runs_started_elsewhere_have_no_viewer(runyard: Runyard, client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {runyard.token}"}
    run = client.post("/api/tasks/plain/run", headers=headers).json()
    for password in ("", "anything"):
        page = client.get(f"/view/{run['id']}", params={"password": password})
        assert page.status_code == 404


def test_state_follows_the_run_to_its_end(client: TestClient, key: str) -> None:
    link = trigger(client, key, "Sheet", [["url"], ["https://example.com/1"]])
    early = state(client, link)
    assert set(early) == STATE_KEYS
    assert early["automation"] == "Sheet" and early["task_name"] == "sheet"
    assert early["input_data"] == [[["url"], ["https://example.com/1"]]]

    final = ended_state(client, link)
    assert final["status"] == "Success"
    assert final["end_reason"] == "success" and final["exit_code"] == 0
    assert final["output_data"] == {"sheet": [["a", "b"], ["1", "2"]]}
    assert final["created_at"].endswith("Z") and final["end_at"].endswith("Z")
    assert isinstance(final["duration_ms"], int)
    assert "\n" in final["description"]


def test_log_streams_lines_then_done(client: TestClient, key: str) -> None:
    link = trigger(client, key, "Sheet")
    params = {"password": link.password}
    with client.stream("GET", f"{link.path}/log", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        events = read_events(response)
    lines = [(data["stream"], data["text"]) for kind, data in events if kind == "line"]
    assert ("out", "one") in lines and ("err", "two") in lines
    kind, done = events[-1]
    assert kind == "done" and done["end_reason"] == "success"

    # An EventSource that reconnects resumes after the last line it saw.
    headers = {"Last-Event-ID": str(len(lines) - 1)}
    with client.stream("GET", f"{link.path}/log", params=params, headers=headers) as response:
        assert [kind for kind, _data in read_events(response)] == ["done"]


def test_stop_through_the_viewer_link(client: TestClient, key: str) -> None:
    link = trigger(client, key, "Slow")
    pid = link.host.split("-")[1][2:4]  # as the clients of the hosted service read it
    response = client.post("/api/v3/stop", json={"pid": pid, "pw": link.password})
    assert response.status_code == 200 and response.json() == {"stopped": pid}
    final = ended_state(client, link)
    assert final["status"] == "Failure" and final["end_reason"] == "stopped"


def test_stop_finds_a_run_whose_password_names_no_run(
    runyard: Runyard, client: TestClient, key: str
) -> None:
    # Links issued before passwords carried their run's id: a bare secret.
    link = trigger(client, key, "Slow")
    legacy = "an-old-style-secret-of-enough-length"
    run_id = link.path.rsplit("/", 1)[1]
    with runyard.store._transaction(write=True) as connection:
        connection.execute(
            sa.update(runs).where(runs.c.id == run_id).values(secret_hash=hash_secret(legacy))
        )
    pid = link.host.split("-")[1][2:4]
    response = client.post("/api/v3/stop", json={"pid": pid, "pw": legacy})
    assert response.status_code == 200 and response.json() == {"stopped": pid}
    # The viewer opens with the old password too, once the run has ended (while
    # it runs, the daemon checks the hash it holds, not the one edited above).
    deadline = time.monotonic() + 15.0
    while runyard.engine.live_run(run_id) is not None:
        assert time.monotonic() < deadline, "the run did not end in time"
        time.sleep(0.05)
    legacy_link = Link(url=link.url, path=link.path, password=legacy, host=link.host)
    assert ended_state(client, legacy_link)["end_reason"] == "stopped"
    # Once the run has ended, such a password is looked for no more.
    response = client.post("/api/v3/stop", json={"pid": pid, "pw": legacy})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "password",
    [
        "{run_id}.not-the-secret",  # the right run, a wrong secret
        "01ARZ3NDEKTSV4RRFFQ69G5FAV.{secret}",  # the right secret, another run's id
        "{secret}",  # the secret without the id
    ],
)
def test_stop_refuses_a_password_that_is_not_the_runs(
    client: TestClient, key: str, password: str
) -> None:
    link = trigger(client, key, "Slow")
    run_id, secret = link.password.split(".", 1)
    pid = link.host.split("-")[1][2:4]
    response = client.post(
        "/api/v3/stop", json={"pid": pid, "pw": password.format(run_id=run_id, secret=secret)}
    )
    assert response.status_code == 404
    assert state(client, link)["phase"] != "ended"


@pytest.mark.parametrize(
    ("path", "media_type"),
    [("/view/static/viewer.js", "text/javascript"), ("/view/static/viewer.css", "text/css")],
)
def test_static_files_are_served_without_a_token(
    client: TestClient, path: str, media_type: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_script_never_inserts_html() -> None:
    script = resources.files("runyard.api").joinpath("static", "viewer.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "document.write" not in script
