"""Any node answers for a run of another node: its log (whole and followed), output, stop, pause.

Nodes are separate `runyard serve` processes on one real PostgreSQL (the
helpers of test_cluster.py). A run's log and live output stay on the disk of
the node that ran it; the node asked passes the request on to that node with
the cluster credential (README "Several nodes"). Node bravo has a token of
its own here, so alpha's token (the caller's) would open nothing on bravo:
whatever alpha gets from bravo came through the cluster credential.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from runyard_harness import TEST_TOKEN, until
from test_cluster import LEASE_SECONDS, Node, _driver_url, database
from test_cluster_limits import runs_alive

pytestmark = pytest.mark.postgres

__all__ = ["database"]  # the fixture, used by name

BRAVO_TOKEN = "bravo-has-a-token-of-its-own-0123456789"
CLUSTER_HEADER = "Runyard-Cluster-Credential"

# Writes a line, output data, then waits for the test's go-ahead before the
# next line: what a follower gets after the go is live, not replayed.
TALKER_TASK = """
[tasks.talker]
run = '''
echo first
printf 'name,price\\na,1\\n' | "$RUNYARD_BIN" output sheet
while [ ! -e "{go}" ]; do sleep 0.05; done
echo second
sleep 60
'''
graceful_stop = "1s"

[tasks.tick]
run = 'true'
cron = "* * * * * *"
"""


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _get(node: Node, path: str, token: str = TEST_TOKEN, **params: Any) -> httpx.Response:
    return httpx.get(f"{node.url}{path}", params=params, headers=_headers(token), timeout=20)


def _post(node: Node, path: str, token: str = TEST_TOKEN) -> httpx.Response:
    return httpx.post(f"{node.url}{path}", headers=_headers(token), timeout=20)


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """Yield (event, data) of an SSE stream's lines."""
    name, data = "", ""
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and name:
            yield name, data
            name, data = "", ""


def _cluster_secret(database: str) -> str:
    engine = sa.create_engine(_driver_url(database))
    try:
        with engine.connect() as connection:
            secret: str = connection.exec_driver_sql(
                "SELECT secret FROM cluster_secret WHERE id = 1"
            ).scalar_one()
    finally:
        engine.dispose()
    return secret


@pytest.fixture
def pair(tmp_path: Path, database: str) -> Iterator[tuple[Node, Node]]:
    """alpha and bravo on the test's database, bravo with a token of its own; stopped after."""
    go = tmp_path / "go"
    extra = TALKER_TASK.replace("{go}", str(go))
    alpha = Node(tmp_path, "alpha", database, extra=extra)
    bravo = Node(tmp_path, "bravo", database, extra=extra)
    bravo.env["RUNYARD_TOKEN"] = BRAVO_TOKEN
    try:
        alpha.launch()
        bravo.launch()
        alpha.wait_until_up()
        bravo.wait_until_up()
        yield alpha, bravo
    finally:
        for node in (alpha, bravo):
            node.stop()


def _started_on_bravo(alpha: Node, bravo: Node) -> str:
    # The tick task is paused first: its runs would only add noise.
    assert _post(bravo, "/api/tasks/tick/pause", BRAVO_TOKEN).status_code == 200
    triggered = _post(bravo, "/api/tasks/talker/run", BRAVO_TOKEN)
    assert triggered.status_code == 201, triggered.text
    run_id: str = triggered.json()["id"]
    assert triggered.json()["node"] == "bravo"
    until(lambda: _get(alpha, f"/api/runs/{run_id}").json()["status"] == "running")
    return run_id


def test_a_run_of_another_node_is_read_followed_and_stopped_through_any_node(
    pair: tuple[Node, Node], tmp_path: Path, database: str
) -> None:
    alpha, bravo = pair
    run_id = _started_on_bravo(alpha, bravo)
    # alpha's token opens nothing on bravo: what follows came through the cluster credential.
    assert _get(bravo, f"/api/runs/{run_id}/log").status_code == 401

    # The output data while it runs, and the first line, written on bravo's disk.
    until(lambda: _get(alpha, f"/api/runs/{run_id}/output").json()["output_data"] != {})
    output = _get(alpha, f"/api/runs/{run_id}/output")
    assert output.status_code == 200, output.text
    assert output.json()["output_data"] == {"sheet": [["name", "price"], ["a", "1"]]}
    assert output.json()["finished"] is False
    assert (
        _get(bravo, f"/api/runs/{run_id}/output", BRAVO_TOKEN).json()["output_data"]
        == (output.json()["output_data"])
    )
    until(lambda: _get(alpha, f"/api/runs/{run_id}/log").json()["total_lines"] >= 1)

    # Followed live through alpha: `second` is written only after the stream is open.
    with httpx.stream(
        "GET",
        f"{alpha.url}/api/runs/{run_id}/log/stream",
        headers=_headers(TEST_TOKEN),
        timeout=20,
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = _events(stream.iter_lines())
        name, data = next(events)
        assert (name, '"text":"first"' in data) == ("line", True), data
        (tmp_path / "go").touch()
        name, data = next(events)
        assert (name, '"text":"second"' in data) == ("line", True), data

        # The page and the raw text: what bravo itself answers (once on its disk).
        until(lambda: _get(alpha, f"/api/runs/{run_id}/log").json()["total_lines"] == 2)
        page = _get(alpha, f"/api/runs/{run_id}/log")
        assert page.status_code == 200
        assert [line["text"] for line in page.json()["lines"]] == ["first", "second"]
        assert page.json() == _get(bravo, f"/api/runs/{run_id}/log", BRAVO_TOKEN).json()
        raw = _get(alpha, f"/api/runs/{run_id}/log/raw")
        assert raw.status_code == 200
        assert raw.text == _get(bravo, f"/api/runs/{run_id}/log/raw", BRAVO_TOKEN).text
        assert "first" in raw.text and "second" in raw.text
        ranged = _get(alpha, f"/api/runs/{run_id}/log", **{"from": 1, "limit": 1})
        assert [line["text"] for line in ranged.json()["lines"]] == ["second"]

        # Stopped through alpha: bravo stops it, the followed stream ends with `done`.
        stopped = _post(alpha, f"/api/runs/{run_id}/stop")
        assert stopped.status_code == 202, stopped.text
        assert stopped.json()["id"] == run_id
        assert stopped.json()["status"] == "running"
        name, data = next(events)
        assert name == "done", data
        assert '"end_reason":"stopped"' in data

    ended = _get(alpha, f"/api/runs/{run_id}").json()
    assert ended["end_reason"] == "stopped"
    again = _post(alpha, f"/api/runs/{run_id}/stop")
    assert again.status_code == 409
    assert "already ended" in again.json()["detail"]
    # An ended run's log stays on bravo's disk; alpha still reads it there.
    assert _get(alpha, f"/api/runs/{run_id}/log").json()["finished"] is True
    assert _get(alpha, f"/api/runs/{run_id}/output").json() == {
        **_get(bravo, f"/api/runs/{run_id}/output", BRAVO_TOKEN).json(),
        "$schema": f"{alpha.url}/schemas/RunOutput.json",
    }

    # The credential is in no answer and in neither node's log.
    secret = _cluster_secret(database)
    assert len(secret) >= 40
    for node in (alpha, bravo):
        assert secret not in node.log()
    assert secret not in page.text + raw.text + stopped.text + output.text


def test_the_cluster_credential_opens_the_run_endpoints_and_nothing_else(
    pair: tuple[Node, Node], database: str
) -> None:
    alpha, bravo = pair
    run_id = _started_on_bravo(alpha, bravo)
    secret = _cluster_secret(database)
    right = {CLUSTER_HEADER: secret}
    log_url = f"{bravo.url}/api/runs/{run_id}/log"
    assert httpx.get(log_url, headers=right, timeout=10).status_code == 200
    for wrong in ("nope", secret[:-1], secret + "x"):
        refused = httpx.get(log_url, headers={CLUSTER_HEADER: wrong}, timeout=10)
        assert refused.status_code == 401
        assert wrong not in refused.text
        assert secret not in refused.text
    assert httpx.get(log_url, timeout=10).status_code == 401
    # Other routes do not take it.
    for path in ("/api/runs", "/api/cluster", f"/api/runs/{run_id}", "/api/tasks"):
        assert httpx.get(f"{bravo.url}{path}", headers=right, timeout=10).status_code == 401
    assert (
        httpx.post(f"{bravo.url}/api/tasks/talker/run", headers=right, timeout=10).status_code
        == 401
    )
    stop = httpx.post(f"{bravo.url}/api/runs/{run_id}/stop", headers=right, timeout=10)
    assert stop.status_code == 202


def test_a_pause_on_one_node_holds_on_every_node(pair: tuple[Node, Node]) -> None:
    alpha, bravo = pair

    def ticks() -> int:
        body = _get(alpha, "/api/runs", task_name="tick", limit=1).json()
        total: int = body["total"]
        return total

    until(lambda: ticks() >= 2)
    assert _post(alpha, "/api/tasks/tick/pause").status_code == 200
    # Within a few seconds bravo knows, and shows it.
    until(lambda: _get(bravo, "/api/tasks/tick", BRAVO_TOKEN).json()["paused"] is True, 5)
    time.sleep(1.5)  # a run that was being recorded as the pause landed
    before = ticks()
    time.sleep(4)
    assert ticks() == before, "a node fired a paused task"

    # Resumed on bravo: both take it up again, each tick fired once.
    assert _post(bravo, "/api/tasks/tick/resume", BRAVO_TOKEN).status_code == 200
    until(lambda: _get(alpha, "/api/tasks/tick").json()["paused"] is False, 5)
    until(lambda: ticks() >= before + 3)


def test_a_dead_owner_gets_a_clear_error_not_a_hang(pair: tuple[Node, Node]) -> None:
    alpha, bravo = pair
    run_id = _started_on_bravo(alpha, bravo)
    until(lambda: _get(alpha, f"/api/runs/{run_id}/log").json()["total_lines"] >= 1)
    with httpx.stream(
        "GET",
        f"{alpha.url}/api/runs/{run_id}/log/stream",
        headers=_headers(TEST_TOKEN),
        timeout=20,
    ) as stream:
        events = _events(stream.iter_lines())
        assert next(events)[0] == "line"
        bravo.kill9()
        started = time.monotonic()
        # The follow ends (bravo's connection is gone), it does not hang.
        assert list(events) == []
        assert time.monotonic() - started < 5

    # Before its lease expires: bravo does not answer; after: it is gone.
    for wait in (0.0, LEASE_SECONDS + 1.5):
        time.sleep(wait)
        for method, path in (
            ("GET", f"/api/runs/{run_id}/log"),
            ("GET", f"/api/runs/{run_id}/log/raw"),
            ("GET", f"/api/runs/{run_id}/log/stream"),
            ("GET", f"/api/runs/{run_id}/output"),
        ):
            started = time.monotonic()
            answer = httpx.request(
                method, f"{alpha.url}{path}", headers=_headers(TEST_TOKEN), timeout=20
            )
            assert time.monotonic() - started < 5
            if path.endswith("/output") and answer.status_code == 200:
                # Taken over meanwhile: the run ended crashed, its output frozen (none).
                assert answer.json()["finished"] is True
                continue
            assert answer.status_code == 503, (path, answer.text)
            detail = answer.json()["detail"]
            assert "node 'bravo'" in detail and "cannot be reached" in detail, detail

    # Taken over by alpha: the run ended crashed, so a stop is a plain 409.
    until(lambda: _get(alpha, f"/api/runs/{run_id}").json()["status"] == "ended", 20)
    assert _post(alpha, f"/api/runs/{run_id}/stop").status_code == 409
    # Its process outlived bravo's kill -9; bravo, back, kills it (a run recorded ended).
    assert run_id in runs_alive()
    bravo.start()
    until(lambda: run_id not in runs_alive(), 10)


def test_the_dashboard_of_any_node_shows_a_run_of_another_node(pair: tuple[Node, Node]) -> None:
    alpha, bravo = pair
    run_id = _started_on_bravo(alpha, bravo)
    until(lambda: _get(alpha, f"/api/runs/{run_id}/output").json()["output_data"] != {})
    with httpx.Client(base_url=alpha.url, timeout=20) as browser:
        # Signed in on alpha only: the session means nothing to bravo.
        browser.get("/login")
        form_token = browser.cookies["runyard_login"]
        signed_in = browser.post(
            "/login", data={"token": TEST_TOKEN, "login_token": form_token, "next": "/"}
        )
        assert signed_in.status_code == 303, signed_in.text

        page = browser.get(f"/runs/{run_id}")
        assert page.status_code == 200
        assert "price" in page.text  # bravo's live output data, in the page alpha renders
        assert 'data-from="0"' in page.text

        text = browser.get(f"/runs/{run_id}/log.txt")
        assert text.status_code == 200
        assert text.text.startswith("first")
        assert text.headers["content-disposition"].startswith("attachment;")
        assert text.headers["content-type"] == "text/plain; charset=utf-8"

        with browser.stream("GET", f"/runs/{run_id}/log/live", params={"from": 0}) as stream:
            assert stream.status_code == 200
            name, data = next(_events(stream.iter_lines()))
            assert name == "line" and '"text":"first"' in data, data

        stopped = browser.post(
            f"/runs/{run_id}/stop", data={"csrf": _csrf(page.text)}, follow_redirects=True
        )
        assert "Stop requested" in stopped.text, stopped.text
    until(lambda: _get(alpha, f"/api/runs/{run_id}").json()["status"] == "ended")
    assert _get(alpha, f"/api/runs/{run_id}").json()["end_reason"] == "stopped"


def _csrf(page: str) -> str:
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]
