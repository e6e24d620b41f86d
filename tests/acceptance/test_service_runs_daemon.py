"""Service lifetimes as runs, through a real daemon: the run API, logs, crashes, notifications.

Each process of a service's instance is a run (kind and trigger `service`):
listed by the run API under the service's name, its log readable and
followable, ended with its exit code and end reason (`unhealthy` when its
health check failed), ended `crashed` by the next daemon after a kill -9 and
never retried. `unhealthy` and `fatal` reach a real receiver.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from runyard_harness import (
    TEST_TOKEN,
    cli_env,
    free_port,
    run_cli,
    start_daemon,
    stop_daemon,
    until,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from notification_receivers import HttpReceiver, Post  # noqa: E402

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
external_url = "https://runyard.example.com/"

[notifications]
coalesce_window = "1h"

[notifiers.hook]
urls = ["json://127.0.0.1:{http_port}/hook"]

[[routes]]
kinds = ["unhealthy", "fatal", "crashed", "failed", "stopped"]
notifiers = ["hook"]

[tasks.hello]
run = "echo hello"

# Fails at once: two failed starts in a row, then fatal.
[services.flaky]
run = "echo starting flaky $RUNYARD_REPLICA_INDEX; exit 3"
restart_delay = "100ms"
restart_attempts = 1
env = {{ SERVICE_TEST_MARK = "{mark}" }}

# Up, but its health check fails: stopped as unhealthy, and restarted.
[services.sick]
run = "echo sick up; exec sleep 600"
restart_delay = "100ms"
restart_attempts = 100
env = {{ SERVICE_TEST_MARK = "{mark}" }}

[services.sick.health_check]
run = "echo db down; exit 1"
interval = "200ms"
failures = 2

[services.web]
run = "echo web up $RUNYARD_REPLICA_INDEX; exec sleep 600"
instances = 2
env = {{ SERVICE_TEST_MARK = "{mark}" }}
"""


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


def write_config(tmp_path: Path, http: HttpReceiver, port: int) -> Path:
    config = tmp_path / "runyard.toml"
    text = CONFIG.format(
        port=port, data_dir=tmp_path / "data", http_port=http.port, mark=uuid.uuid4().hex
    )
    config.write_text(text, "utf-8")
    return config


def get(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url}{path}", params=params, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def runs_of(url: str, name: str) -> list[dict[str, Any]]:
    """Return the runs of `name`, oldest first."""
    body = get(url, "/api/runs", task_name=name, sort_field="created_at", sort_direction="asc")
    runs: list[dict[str, Any]] = body["runs"]
    assert body["total"] == len(runs)
    return runs


def instances(url: str, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = get(url, f"/api/services/{name}")["instances"]
    return found


def posts_about(posts: list[Post], title: str) -> list[dict[str, Any]]:
    return [post.json() for post in posts if post.json()["title"] == title]


def test_lifetimes_are_runs_with_logs_ends_and_notifications(
    tmp_path: Path, http: HttpReceiver
) -> None:
    port = free_port()
    config = write_config(tmp_path, http, port)
    output = tmp_path / "daemon.log"
    process, url = start_daemon(config, cli_env(RUNYARD_TOKEN=TEST_TOKEN), output, port)
    try:
        # flaky: two lifetimes, both failed with exit code 3, then the instance is fatal.
        until(lambda: instances(url, "flaky")[0]["state"] == "fatal")
        until(lambda: all(run["status"] == "ended" for run in runs_of(url, "flaky")))
        flaky = runs_of(url, "flaky")
        assert len(flaky) == 2
        for run in flaky:
            assert (run["kind"], run["triggered_by"]) == ("service", "service")
            assert (run["task_name"], run["replica_index"]) == ("flaky", 0)
            assert (run["end_reason"], run["exit_code"]) == ("failed", 3)
            assert run["retry_attempt"] == 0 and "retry_of_run_id" not in run
        _first_line, failed, why = flaky[0]["description"].splitlines()
        assert failed.startswith("Failed after ") and failed.endswith(" with exit code 3.")
        assert why == "Exited with code 3; restarting in 0.1s (instance now backoff)."
        assert flaky[1]["description"].endswith(
            "Exited with code 3; gave up after 2 failed starts in a row (instance now fatal)."
        )
        # The fatal instance points at its last lifetime, whose log is readable.
        assert instances(url, "flaky")[0]["run_id"] == flaky[1]["id"]
        log = get(url, f"/api/runs/{flaky[1]['id']}/log")
        assert [line["text"] for line in log["lines"]] == ["starting flaky 0"]
        assert log["finished"] is True
        raw = httpx.get(f"{url}/api/runs/{flaky[0]['id']}/log/raw", headers=AUTH)
        assert raw.text == "starting flaky 0\n"

        # sick: its health check fails twice, so it is stopped as unhealthy and restarted.
        def unhealthy_ends() -> list[dict[str, Any]]:
            return [run for run in runs_of(url, "sick") if run.get("end_reason") == "unhealthy"]

        until(lambda: len(unhealthy_ends()) >= 1)
        unhealthy = unhealthy_ends()[0]
        assert unhealthy["kind"] == "service" and unhealthy["replica_index"] == 0
        assert "Last health check: exit 1: db down." in unhealthy["description"]
        assert "its health check failed" in unhealthy["description"]
        until(lambda: any(run["status"] == "running" for run in runs_of(url, "sick")))

        # The notifications: unhealthy (sick) and fatal (flaky), each linking to its run.
        http.wait_for(2)

        def titled(title: str) -> list[dict[str, Any]]:
            until(lambda: bool(posts_about(http.posts, title)))
            return posts_about(http.posts, title)

        (fatal,) = titled("runyard: flaky[0] fatal (exit 3)")
        assert "Service: flaky (instance 0)" in fatal["message"]
        assert f"Run: https://runyard.example.com/runs/{flaky[1]['id']}" in fatal["message"]
        assert (
            "Instance 0 of service flaky is fatal: exited with code 3; gave up after 2 "
            in (fatal["message"])
        )
        assert "starting flaky 0" in fatal["message"]  # the log tail
        sick_post = titled(f"runyard: sick[0] unhealthy (exit {unhealthy['exit_code']})")[0]
        assert "Last health check: exit 1: db down." in sick_post["message"]
        assert f"Run: https://runyard.example.com/runs/{unhealthy['id']}" in sick_post["message"]
        # Failed lifetimes of a crash loop are not `failed` notifications (fatal says it once):
        # their ends were heard before the fatal signal, so they would be listed by now.
        kinds = {n["kind"] for n in get(url, "/api/notifications")["notifications"]}
        assert kinds == {"unhealthy", "fatal"}

        # web: two instances up, each lifetime a running run named by its instance.
        until(lambda: all(i["state"] == "running" for i in instances(url, "web")))
        web = instances(url, "web")
        for instance in web:
            run = get(url, f"/api/runs/{instance['run_id']}")
            assert (run["status"], run["kind"], run["task_name"]) == ("running", "service", "web")
            assert run["replica_index"] == instance["index"]
        assert sorted(run["replica_index"] for run in runs_of(url, "web")) == [0, 1]
        # A lifetime is not stopped as a run: the service is.
        refused = httpx.post(f"{url}/api/runs/{web[0]['run_id']}/stop", headers=AUTH)
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == (
            f"Run {web[0]['run_id']} is a lifetime of service web: stop the service instead "
            "(POST /api/services/web/stop); stopping one lifetime would only restart it."
        )
        # Nor triggered as a task.
        assert httpx.post(f"{url}/api/tasks/web/run", headers=AUTH).status_code == 404

        # Follow instance 1's log live, stop the service: the stream ends with the ended run.
        events: list[tuple[str, Any]] = []
        with httpx.stream(
            "GET", f"{url}/api/runs/{web[1]['run_id']}/log/stream", headers=AUTH, timeout=30
        ) as stream:
            kind = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line.removeprefix("data: "))))
                    if kind == "line":
                        stopped = httpx.post(f"{url}/api/services/web/stop", headers=AUTH)
                        assert stopped.status_code == 200, stopped.text
                    if kind == "done":
                        break
        (first, done) = events
        assert first == ("line", first[1]) and first[1]["text"] == "web up 1"
        assert done[0] == "done"
        assert (done[1]["id"], done[1]["status"]) == (web[1]["run_id"], "ended")
        assert done[1]["end_reason"] == "stopped"
        until(lambda: all(run["status"] == "ended" for run in runs_of(url, "web")))
        assert {run["end_reason"] for run in runs_of(url, "web")} == {"stopped"}
    finally:
        stop_daemon(process, output)


CRASH_CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
external_url = "https://runyard.example.com/"

[notifiers.hook]
urls = ["json://127.0.0.1:{http_port}/hook"]

[[routes]]
kinds = ["crashed"]
notifiers = ["hook"]

[services.keeper]
run = "echo keeper up; exec sleep 600"
"""


def test_a_kill_9_leaves_a_running_lifetime_the_next_daemon_ends_crashed(
    tmp_path: Path, http: HttpReceiver
) -> None:
    port = free_port()
    config = tmp_path / "runyard.toml"
    config.write_text(
        CRASH_CONFIG.format(port=port, data_dir=tmp_path / "data", http_port=http.port), "utf-8"
    )
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
    first, url = start_daemon(config, env, tmp_path / "first.log", port)
    try:
        until(lambda: instances(url, "keeper")[0]["state"] == "running")
        (old,) = runs_of(url, "keeper")
        assert old["status"] == "running"
        assert old["id"] == instances(url, "keeper")[0]["run_id"]
    finally:
        first.kill()
        first.wait()

    output = tmp_path / "second.log"
    second, url = start_daemon(config, env, output, port)
    try:
        crashed = get(url, f"/api/runs/{old['id']}")
        assert (crashed["status"], crashed["end_reason"], crashed["exit_code"]) == (
            "ended",
            "crashed",
            -2,
        )
        assert crashed["kind"] == "service"
        assert "Crashed: the daemon stopped while the run was running." in crashed["description"]
        # Not retried nor requeued: the one new run is the fresh instance's lifetime.
        until(lambda: instances(url, "keeper")[0]["state"] == "running")
        runs = runs_of(url, "keeper")
        assert [run["id"] for run in runs][0] == old["id"] and len(runs) == 2
        fresh = runs[1]
        assert (fresh["status"], fresh["triggered_by"], fresh["retry_attempt"]) == (
            "running",
            "service",
            0,
        )
        assert "retry_of_run_id" not in fresh
        # The CLI lists a service's lifetimes as a task's runs.
        listed = run_cli("--config", str(config), "runs", "keeper", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert [run["id"] for run in json.loads(listed.stdout)["runs"]] == [fresh["id"], old["id"]]
        (post,) = http.wait_for(1)
        assert post.json()["title"] == "runyard: keeper[0] crashed (exit -2)"
        assert f"Run: https://runyard.example.com/runs/{old['id']}" in post.json()["message"]
    finally:
        stop_daemon(second, output)

    # The daemon's shutdown stopped the fresh lifetime: its end was stored before it exited.
    third, url = start_daemon(config, env, tmp_path / "third.log", port)
    try:
        ended = get(url, f"/api/runs/{fresh['id']}")
        assert (ended["status"], ended["end_reason"]) == ("ended", "daemon_stopped")
        assert (
            "Stopped" in ended["description"]
            and "because the daemon shut down" in (ended["description"])
        )
    finally:
        stop_daemon(third, tmp_path / "third.log")
