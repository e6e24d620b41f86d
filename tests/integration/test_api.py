"""The REST API over a real Runyard: real config file, SQLite store and processes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from runyard import __version__
from runyard.app import Runyard

T = TypeVar("T")

CONFIG = """
[daemon]
data_dir = "data"
max_concurrent_runs = 8
shutdown_timeout = "5s"

[tasks.hello]
run = "echo hi"
description = "Say hi."

[tasks.sleeper]
run = "sleep 30"
graceful_stop = "2s"

[tasks.fail]
run = "echo oops >&2; exit 3"

[tasks.chatty]
run = "echo one; sleep 0.3; echo two"

[tasks.many]
run = "seq 0 999; sleep 0.2; seq 1000 1999; sleep 0.2; seq 2000 2999"

[tasks.quiet]
run = "echo waiting; sleep 10"
graceful_stop = "1s"

[tasks.greet]
run = 'echo "hello $WHO"'

[[tasks.greet.params]]
name = "who"
required = true
"""

RUN_KEYS = {
    "$schema",
    "id",
    "task_name",
    "kind",  # not in the spec: task, or service (a service's lifetime)
    "status",
    "end_reason",
    "exit_code",
    "created_at",
    "start_at",
    "end_at",
    "replica_index",
    "retry_attempt",
    "triggered_by",
    "duration_ms",
    "params",
    "description",
}
PROBLEM = "application/problem+json"


def eventually(probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Return the first truthy result of `probe`, polling until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def trigger(client: TestClient, task: str, **params: Any) -> dict[str, Any]:
    response = client.post(f"/api/tasks/{task}/run", json={"params": params} if params else None)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def run_to_end(client: TestClient, task: str, **params: Any) -> dict[str, Any]:
    response = client.post(
        f"/api/tasks/{task}/run", params={"wait": "true"}, json={"params": params}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "ended", body
    return body


def ended(client: TestClient, run_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        run: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        return run if run["status"] == "ended" else None

    return eventually(probe)


def read_events(
    lines: Iterator[str], stop: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Parse SSE lines into events until `stop(event)` is true (that event included)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if current:
                events.append(current)
                if stop(current):
                    return events
            current = {}
        elif line.startswith(":"):
            current.setdefault("comments", []).append(line)
        else:
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    raise AssertionError(f"stream ended before the awaited event: {events}")


def assert_problem(response: Any, status: int, location: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["$schema"] == "http://testserver/schemas/ErrorModel.json"
    assert body["type"] == "about:blank"
    assert body["status"] == status
    # The path as sent, percent-encoded: `instance` is a URI reference.
    assert body["instance"] == response.request.url.raw_path.split(b"?")[0].decode("ascii")
    assert body["title"] and body["detail"]
    if location is not None:
        assert [error["location"] for error in body["errors"]] == [location]
    return body


# ----- health, tasks ----------------------------------------------------------


def test_health_is_public(client: TestClient, runyard: Runyard) -> None:
    before = (datetime.now(UTC) - runyard.started_at).total_seconds()
    response = client.get("/health", headers={"Authorization": ""})
    after = (datetime.now(UTC) - runyard.started_at).total_seconds()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    # The time since the service started, read between the two (rounded to 1 ms).
    assert before - 0.0005 <= body["uptime_seconds"] <= after + 0.0005, (before, body, after)


def test_list_tasks(client: TestClient) -> None:
    body = client.get("/api/tasks").json()
    assert body["$schema"] == "http://testserver/schemas/TasksResponseBody.json"
    names = [task["name"] for task in body["tasks"]]
    assert names == ["chatty", "fail", "greet", "hello", "many", "quiet", "sleeper"]
    hello = body["tasks"][names.index("hello")]
    assert hello["$schema"] == "http://testserver/schemas/Task.json"
    assert hello["description"] == "Say hi."
    assert hello["timeout"] is None
    assert hello["graceful_stop"] == 5
    assert hello["success_exit_codes"] == [0]
    assert hello["active_runs"] == 0 and hello["queued_runs"] == 0
    greet = body["tasks"][names.index("greet")]
    assert greet["params"] == [
        {
            "name": "who",
            "passing": "env",
            "env": "WHO",
            "default": None,
            "required": True,
            "choices": [],
        }
    ]


def test_get_task_and_unknown_task(client: TestClient) -> None:
    assert client.get("/api/tasks/sleeper").json()["graceful_stop"] == 2
    body = assert_problem(client.get("/api/tasks/nope"), 404)
    assert "nope" in body["detail"]


def test_task_counts_show_active_runs(client: TestClient) -> None:
    run = trigger(client, "sleeper")
    eventually(lambda: client.get("/api/tasks/sleeper").json()["active_runs"] == 1)
    client.post(f"/api/runs/{run['id']}/stop")
    ended(client, run["id"])


# ----- trigger ----------------------------------------------------------------


def test_trigger_answers_201_with_the_run(client: TestClient) -> None:
    run = trigger(client, "hello")
    assert run["$schema"] == "http://testserver/schemas/Run.json"
    assert run["task_name"] == "hello"
    # Answered once its insert is committed; its start is not awaited.
    assert run["status"] == "pending"
    assert run["triggered_by"] == "api"
    assert run["replica_index"] == 0 and run["retry_attempt"] == 0
    ended(client, run["id"])


def test_trigger_with_wait_answers_the_ended_run(client: TestClient) -> None:
    run = run_to_end(client, "hello")
    assert run["end_reason"] == "success"
    assert run["exit_code"] == 0
    assert run["end_at"].endswith("Z") and run["start_at"].endswith("Z")
    took = datetime.fromisoformat(run["end_at"]) - datetime.fromisoformat(run["start_at"])
    assert run["duration_ms"] == int(took / timedelta(milliseconds=1))


def test_trigger_wait_timeout_answers_the_run_still_running(client: TestClient) -> None:
    response = client.post("/api/tasks/sleeper/run", params={"wait": "true", "wait_timeout": "1"})
    assert response.status_code == 201
    run = response.json()
    assert run["status"] == "running"
    assert "end_reason" not in run and "end_at" not in run
    client.post(f"/api/runs/{run['id']}/stop")
    ended(client, run["id"])


def test_trigger_passes_params(client: TestClient) -> None:
    run = run_to_end(client, "greet", who="world")
    assert run["params"] == {"who": "world"}
    log = client.get(f"/api/runs/{run['id']}/log").json()
    assert [line["text"] for line in log["lines"]] == ["hello world"]


def test_trigger_unknown_task_is_404(client: TestClient) -> None:
    assert_problem(client.post("/api/tasks/nope/run"), 404)


def test_trigger_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/api/tasks/hello/run",
        content=b'{"params": ',
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(response, 400, "body")
    assert body["title"] == "Bad Request"


@pytest.mark.parametrize(
    ("body", "location", "message"),
    [
        ({"params": {"who": "a", "x": 1}}, "body.params.x", "unknown param"),
        ({"params": {}}, "body.params.who", "required param is missing"),
        ({"params": {"who": {"nested": 1}}}, "body.params.who", "must be a string"),
        ({"params": "who"}, "body.params", "must be an object"),
        ({"parms": {}}, "body.parms", "is not an allowed field"),
    ],
)
def test_trigger_bad_body_is_422(
    client: TestClient, body: dict[str, Any], location: str, message: str
) -> None:
    problem = assert_problem(client.post("/api/tasks/greet/run", json=body), 422, location)
    assert problem["title"] == "Unprocessable Entity"
    assert problem["errors"][0]["message"].startswith(message)
    assert location in problem["detail"]


def test_trigger_bad_wait_timeout_is_422(client: TestClient) -> None:
    response = client.post("/api/tasks/hello/run", params={"wait_timeout": "0"})
    problem = assert_problem(response, 422, "query.wait_timeout")
    assert problem["errors"][0]["message"] == "must be greater than or equal to 1"


# ----- run lists --------------------------------------------------------------


def test_list_runs_shape(client: TestClient) -> None:
    run = run_to_end(client, "hello")
    body = client.get("/api/tasks/hello/runs").json()
    assert set(body) == {"$schema", "runs", "total"}
    assert body["$schema"] == "http://testserver/schemas/RunsResponseBody.json"
    assert body["total"] == 1
    [listed] = body["runs"]
    assert set(listed) == RUN_KEYS
    assert listed["$schema"] == "http://testserver/schemas/Run.json"
    assert listed["id"] == run["id"]
    assert listed["status"] == "ended" and listed["end_reason"] == "success"
    for key in ("created_at", "start_at", "end_at"):
        assert listed[key].endswith("Z")


def test_list_runs_omits_unset_optional_fields(client: TestClient) -> None:
    run = trigger(client, "sleeper")
    eventually(lambda: client.get(f"/api/runs/{run['id']}").json()["status"] == "running")
    [listed] = client.get("/api/tasks/sleeper/runs").json()["runs"]
    assert set(listed) == RUN_KEYS - {"end_reason", "end_at", "duration_ms"}
    client.post(f"/api/runs/{run['id']}/stop")
    ended(client, run["id"])


@pytest.mark.parametrize(
    "sort_field", ["task_name", "status", "start_at", "exit_code", "duration", "created_at", ""]
)
@pytest.mark.parametrize("sort_direction", ["asc", "desc", ""])
def test_every_sort_is_accepted(client: TestClient, sort_field: str, sort_direction: str) -> None:
    run_to_end(client, "hello")
    run_to_end(client, "fail")
    response = client.get(
        "/api/runs", params={"sort_field": sort_field, "sort_direction": sort_direction}
    )
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 2


def test_sort_direction_orders_runs(client: TestClient) -> None:
    first = run_to_end(client, "hello")["id"]
    second = run_to_end(client, "hello")["id"]

    def ids(direction: str) -> list[str]:
        params = {"sort_field": "created_at", "sort_direction": direction}
        return [run["id"] for run in client.get("/api/runs", params=params).json()["runs"]]

    assert ids("asc") == [first, second]
    assert ids("desc") == [second, first]
    assert ids("") == [second, first]  # the default is newest first


def test_paging(client: TestClient) -> None:
    for _ in range(3):
        run_to_end(client, "hello")
    page = client.get("/api/runs", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 3
    assert len(page["runs"]) == 1


def test_status_filter_takes_a_phase_or_an_end_reason(client: TestClient) -> None:
    ok = run_to_end(client, "hello")["id"]
    bad = run_to_end(client, "fail")
    assert bad["end_reason"] == "failed" and bad["exit_code"] == 3

    def ids(status: str) -> set[str]:
        body = client.get("/api/runs", params={"status": status}).json()
        return {run["id"] for run in body["runs"]}

    assert ids("ended") == {ok, bad["id"]}
    assert ids("running") == set()
    assert ids("pending") == set()
    assert ids("success") == {ok}
    assert ids("failed") == {bad["id"]}
    assert ids("") == {ok, bad["id"]}


def test_search(client: TestClient) -> None:
    run = run_to_end(client, "hello")
    run_to_end(client, "fail")
    body = client.get("/api/runs", params={"search": run["id"][-8:].lower()}).json()
    assert [found["id"] for found in body["runs"]] == [run["id"]]
    assert client.get("/api/runs", params={"search": "fai"}).json()["total"] == 1


def test_task_name_filter(client: TestClient) -> None:
    run_to_end(client, "hello")
    fail = run_to_end(client, "fail")
    body = client.get("/api/runs", params={"task_name": "fail"}).json()
    assert [run["id"] for run in body["runs"]] == [fail["id"]]
    # On the per-task endpoint the query filter is ANDed with the path.
    other = client.get("/api/tasks/hello/runs", params={"task_name": "fail"}).json()
    assert other["runs"] == [] and other["total"] == 0
    same = client.get("/api/tasks/hello/runs", params={"task_name": "hello"}).json()
    assert same["total"] == 1


def test_list_runs_of_unknown_task_is_404(client: TestClient) -> None:
    assert_problem(client.get("/api/tasks/nope/runs"), 404)
    assert_problem(client.get("/api/runs", params={"task_name": "nope"}), 404)


STATUS_VALUES = (
    "pending, running, ended, success, failed, stopped, timeout, crashed, skipped, "
    "log_overflow, queue_full, missed, daemon_stopped, start_failed, unhealthy"
)


@pytest.mark.parametrize(
    ("path", "params", "location", "message", "value"),
    [
        (
            "/api/tasks/hello/runs",
            {"limit": "0"},
            "query.limit",
            "must be greater than or equal to 1",
            0,
        ),
        (
            "/api/tasks/hello/runs",
            {"limit": "5000"},
            "query.limit",
            "must be less than or equal to 1000",
            5000,
        ),
        ("/api/tasks/hello/runs", {"limit": "abc"}, "query.limit", "must be an integer", "abc"),
        (
            "/api/tasks/hello/runs",
            {"offset": "-1"},
            "query.offset",
            "must be greater than or equal to 0",
            -1,
        ),
        (
            "/api/tasks/hello/runs",
            {"sort_field": "bogus"},
            "query.sort_field",
            "must be one of task_name, status, start_at, exit_code, duration, created_at",
            "bogus",
        ),
        (
            "/api/tasks/hello/runs",
            {"sort_direction": "up"},
            "query.sort_direction",
            "must be one of asc, desc",
            "up",
        ),
        (
            "/api/tasks/hello/runs",
            {"status": "nope"},
            "query.status",
            f"must be one of {STATUS_VALUES}",
            "nope",
        ),
        (
            "/api/runs",
            {"status": "nope"},
            "query.status",
            f"must be one of {STATUS_VALUES}",
            "nope",
        ),
        ("/api/runs", {"limit": "1001"}, "query.limit", "must be less than or equal to 1000", 1001),
        ("/api/tasks/a b/runs", {}, "path.taskName", "must match ^[a-zA-Z0-9._-]+$", "a b"),
        (
            "/api/tasks/" + "a" * 101 + "/runs",
            {},
            "path.taskName",
            "must be at most 100 characters long",
            "a" * 101,
        ),
    ],
)
def test_bad_list_query_is_422(
    client: TestClient,
    path: str,
    params: dict[str, str],
    location: str,
    message: str,
    value: object,
) -> None:
    body = assert_problem(client.get(path, params=params), 422, location)
    assert body["title"] == "Unprocessable Entity"
    assert body["errors"] == [{"location": location, "message": message, "value": value}]
    assert location in body["detail"] and message in body["detail"]


# ----- run detail and stop ------------------------------------------------------


def test_get_run_and_unknown_run(client: TestClient) -> None:
    run = run_to_end(client, "hello")
    detail = client.get(f"/api/runs/{run['id']}").json()
    assert detail["id"] == run["id"]
    assert detail["description"]
    assert "input_data" not in detail
    assert_problem(client.get("/api/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404)


def test_stop_a_running_run(client: TestClient) -> None:
    run = trigger(client, "sleeper")
    eventually(lambda: client.get(f"/api/runs/{run['id']}").json()["status"] == "running")
    response = client.post(f"/api/runs/{run['id']}/stop")
    assert response.status_code == 202
    assert response.json()["id"] == run["id"]
    final = ended(client, run["id"])
    assert final["end_reason"] == "stopped"
    body = assert_problem(client.post(f"/api/runs/{run['id']}/stop"), 409)
    assert "already ended" in body["detail"]


def test_stop_a_queued_run_ends_it_at_once(client: TestClient) -> None:
    first = trigger(client, "sleeper")
    second = trigger(client, "sleeper")  # max_concurrent 1: it waits
    response = client.post(f"/api/runs/{second['id']}/stop")
    assert response.status_code == 200
    stopped = response.json()
    assert stopped["status"] == "ended" and stopped["end_reason"] == "stopped"
    client.post(f"/api/runs/{first['id']}/stop")
    ended(client, first["id"])


def test_stop_unknown_run_is_404(client: TestClient) -> None:
    assert_problem(client.post("/api/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/stop"), 404)


# ----- logs -------------------------------------------------------------------


def test_log_page_and_raw(client: TestClient) -> None:
    run = run_to_end(client, "chatty")
    page = client.get(f"/api/runs/{run['id']}/log").json()
    assert page["$schema"] == "http://testserver/schemas/LogPage.json"
    assert page["run_id"] == run["id"]
    assert [(line["n"], line["stream"], line["text"]) for line in page["lines"]] == [
        (0, "out", "one"),
        (1, "out", "two"),
    ]
    assert page["lines"][0]["at"].endswith("Z")
    assert page["next"] == 2 and page["total_lines"] == 2 and page["finished"] is True
    rest = client.get(f"/api/runs/{run['id']}/log", params={"from": 1, "limit": 1}).json()
    assert [line["text"] for line in rest["lines"]] == ["two"] and rest["next"] == 2
    raw = client.get(f"/api/runs/{run['id']}/log/raw")
    assert raw.headers["content-type"] == "text/plain; charset=utf-8"
    assert raw.text == "one\ntwo\n"


def test_log_of_a_run_that_printed_nothing_is_empty(client: TestClient) -> None:
    run = trigger(client, "sleeper")
    page = client.get(f"/api/runs/{run['id']}/log").json()
    assert page["lines"] == [] and page["next"] == 0 and page["finished"] is False
    assert client.get(f"/api/runs/{run['id']}/log/raw").text == ""
    client.post(f"/api/runs/{run['id']}/stop")
    ended(client, run["id"])


def test_log_bad_query_and_unknown_run(client: TestClient) -> None:
    run = run_to_end(client, "hello")
    assert_problem(
        client.get(f"/api/runs/{run['id']}/log", params={"limit": 0}), 422, "query.limit"
    )
    assert_problem(
        client.get(f"/api/runs/{run['id']}/log", params={"limit": 10001}), 422, "query.limit"
    )
    assert_problem(client.get(f"/api/runs/{run['id']}/log", params={"from": -1}), 422, "query.from")
    for suffix in ("log", "log/raw", "log/stream"):
        assert_problem(client.get(f"/api/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/{suffix}"), 404)


def test_log_stream_of_an_ended_run(client: TestClient) -> None:
    run = run_to_end(client, "chatty")
    with client.stream("GET", f"/api/runs/{run['id']}/log/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response.iter_lines(), lambda e: e.get("event") == "done")
    lines = [(e["id"], e["data"]["text"]) for e in events if e["event"] == "line"]
    assert lines == [("0", "one"), ("1", "two")]
    done = events[-1]["data"]
    assert done["id"] == run["id"] and done["end_reason"] == "success"
    assert done["$schema"] == "http://testserver/schemas/Run.json"


def test_log_stream_follows_a_live_run_to_its_end(client: TestClient) -> None:
    run = trigger(client, "chatty")
    with client.stream("GET", f"/api/runs/{run['id']}/log/stream") as response:
        events = read_events(response.iter_lines(), lambda e: e.get("event") == "done")
    assert [e["data"]["text"] for e in events if e["event"] == "line"] == ["one", "two"]
    assert [e["data"]["n"] for e in events if e["event"] == "line"] == [0, 1]
    assert events[-1]["data"]["status"] == "ended"
    assert events[-1]["data"]["end_reason"] == "success"


@pytest.mark.parametrize("connect_after", [0.0, 0.1, 0.3])
def test_log_stream_sends_every_line_once_in_order(
    client: TestClient, connect_after: float
) -> None:
    run = trigger(client, "many")
    time.sleep(connect_after)  # join before, during or between bursts of output
    with client.stream("GET", f"/api/runs/{run['id']}/log/stream") as response:
        events = read_events(response.iter_lines(), lambda e: e.get("event") == "done")
    lines = [e["data"] for e in events if e["event"] == "line"]
    assert [line["n"] for line in lines] == list(range(3000))
    assert [line["text"] for line in lines] == [str(i) for i in range(3000)]
    assert events[-1]["data"]["end_reason"] == "success"


@pytest.mark.parametrize("connect_after", [0.0, 0.02, 0.05])
def test_log_stream_sends_a_line_written_just_before_it_subscribed(
    client: TestClient, connect_after: float
) -> None:
    # The only line may still be in the log writer's buffer when the stream
    # starts: it must arrive while the run runs, not when it ends 10 s later.
    run = trigger(client, "quiet")
    time.sleep(connect_after)
    started = time.monotonic()
    with client.stream("GET", f"/api/runs/{run['id']}/log/stream") as response:
        events = read_events(response.iter_lines(), lambda e: e.get("event") in ("line", "done"))
    assert events[-1]["event"] == "line" and events[-1]["data"]["text"] == "waiting"
    assert time.monotonic() - started < 5
    client.post(f"/api/runs/{run['id']}/stop")
    ended(client, run["id"])


def test_log_stream_resumes_after_last_event_id(client: TestClient) -> None:
    run = run_to_end(client, "chatty")
    with client.stream(
        "GET", f"/api/runs/{run['id']}/log/stream", headers={"Last-Event-ID": "0"}
    ) as response:
        events = read_events(response.iter_lines(), lambda e: e.get("event") == "done")
    assert [e["data"]["text"] for e in events if e["event"] == "line"] == ["two"]
    with client.stream("GET", f"/api/runs/{run['id']}/log/stream?from=2") as response:
        events = read_events(response.iter_lines(), lambda e: e.get("event") == "done")
    assert [e["event"] for e in events] == ["done"]


def test_log_stream_of_a_queued_run_that_is_stopped(client: TestClient) -> None:
    first = trigger(client, "sleeper")
    second = trigger(client, "sleeper")
    with client.stream("GET", f"/api/runs/{second['id']}/log/stream") as response:
        assert client.post(f"/api/runs/{second['id']}/stop").status_code == 200
        events = read_events(response.iter_lines(), lambda e: e.get("event") == "done")
    assert events[-1]["data"]["end_reason"] == "stopped"
    client.post(f"/api/runs/{first['id']}/stop")
    ended(client, first["id"])


# ----- events -----------------------------------------------------------------


def test_events_stream_shows_a_run_lifecycle(client: TestClient) -> None:
    with client.stream("GET", "/api/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        run = trigger(client, "hello")
        events = read_events(
            response.iter_lines(),
            lambda e: e.get("event") == "run.ended" and e["data"]["id"] == run["id"],
        )
    kinds = [e["event"] for e in events if e["data"]["id"] == run["id"]]
    assert kinds == ["run.created", "run.started", "run.ended"]
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    assert events[-1]["data"]["end_reason"] == "success"


def test_events_stream_replays_after_last_event_id(client: TestClient) -> None:
    run = run_to_end(client, "hello")
    with client.stream("GET", "/api/events", headers={"Last-Event-ID": "1"}) as response:
        events = read_events(response.iter_lines(), lambda e: e.get("event") == "run.ended")
    assert [(e["id"], e["event"]) for e in events] == [("2", "run.started"), ("3", "run.ended")]
    assert events[-1]["data"]["id"] == run["id"]


def test_streams_end_when_the_server_closes(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    with client.stream("GET", "/api/events") as response:
        app.state.closing.close()  # what uvicorn's signal handler does
        assert list(response.iter_lines()) == []


# ----- schemas and errors -----------------------------------------------------


def test_schema_urls_serve_json_schemas(client: TestClient) -> None:
    run_to_end(client, "hello")
    body = client.get("/api/runs").json()
    for url, required in (
        (body["$schema"], {"runs", "total"}),
        (body["runs"][0]["$schema"], {"id", "task_name", "status", "exit_code"}),
    ):
        response = client.get(url, headers={"Authorization": ""})
        assert response.status_code == 200
        schema = response.json()
        assert schema["$id"] == url
        assert required <= set(schema["required"])
    error_schema = client.get("/schemas/ErrorModel.json").json()
    assert {"type", "title", "status", "detail", "instance", "errors"} <= set(
        error_schema["properties"]
    )
    assert_problem(client.get("/schemas/Nope.json"), 404)


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    assert_problem(client.get("/api/nothing"), 404)
    body = assert_problem(client.delete("/api/tasks"), 405)
    assert "GET" in body["detail"]


def test_wrong_method_names_the_methods_of_every_route_of_the_path(client: TestClient) -> None:
    # GET and POST /api/keys are two routes; Allow must name both.
    response = client.request("OPTIONS", "/api/keys")
    assert_problem(response, 405)
    assert response.headers["Allow"] == "GET, POST"


def test_openapi_documents_the_spec_parameters(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/api/tasks/{taskName}/runs"]["get"]
    names = [parameter["name"] for parameter in operation["parameters"]]
    assert names == [
        "taskName",
        "limit",
        "offset",
        "status",
        "task_name",
        "sort_field",
        "sort_direction",
        "search",
    ]
    assert PROBLEM in operation["responses"]["422"]["content"]
