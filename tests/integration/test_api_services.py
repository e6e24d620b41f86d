"""The services API over a real Runyard: real config file, real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from fastapi.testclient import TestClient
from support.processes import eventually, is_alive

from runyard.app import Runyard

T = TypeVar("T")

CONFIG = """
[daemon]
data_dir = "data"
shutdown_timeout = "5s"

[tasks.hello]
run = "echo hi"

[services.db]
run = "exec sleep 600"
graceful_stop = "2s"

[services.db.health_check]
run = "true"
interval = "100ms"

[services.app]
run = "exec sleep 600"
depends_on = ["db"]
instances = 2

[services.idle]
run = "exec sleep 600"
autostart = false

[services.sick]
run = "exec sleep 600"
health_check = { run = "echo db down; exit 3", interval = "500ms", failures = 100 }

[services.blocked]
run = "exec sleep 600"
depends_on = ["sick"]
"""

PROBLEM = "application/problem+json"


def service(client: TestClient, name: str) -> dict[str, Any]:
    response = client.get(f"/api/services/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def states(client: TestClient, name: str) -> list[str]:
    return [instance["state"] for instance in service(client, name)["instances"]]


def up(client: TestClient, name: str, state: str) -> dict[str, Any] | None:
    """Return the service once every instance is in `state`, else None."""
    body = service(client, name)
    return body if all(i["state"] == state for i in body["instances"]) else None


def test_list_services_with_their_definitions_and_instances(client: TestClient) -> None:
    eventually(lambda: up(client, "app", "running"))
    body = client.get("/api/services").json()
    assert body["$schema"] == "http://testserver/schemas/ServicesResponseBody.json"
    assert [found["name"] for found in body["services"]] == [
        "app",
        "blocked",
        "db",
        "idle",
        "sick",
    ]
    app, _blocked, db, idle, _sick = body["services"]
    assert app["$schema"] == "http://testserver/schemas/Service.json"
    assert app["definition"]["depends_on"] == ["db"]
    assert app["definition"]["instances"] == 2
    assert app["definition"]["restart"] == "always"
    assert app["definition"]["restart_delay"] == 1.0
    assert app["definition"]["health_check"] is None
    assert [instance["index"] for instance in app["instances"]] == [0, 1]
    assert all(is_alive(instance["pid"]) for instance in app["instances"])
    assert db["definition"]["health_check"] == {
        "kind": "run",
        "target": "true",
        "interval": 0.1,
        "timeout": 5.0,
        "failures": 3,
        "start_period": 0.0,
    }
    (db_instance,) = db["instances"]
    assert db_instance["state"] == "healthy"
    assert db_instance["health_ok"] is True
    assert db_instance["health"] == "exit 0"
    assert db_instance["restarts"] == 0
    (idle_instance,) = idle["instances"]
    assert idle_instance["state"] == "stopped"
    assert idle_instance["pid"] is None
    for name in ("Service", "ServicesResponseBody", "ServiceInstance"):
        assert client.get(f"/schemas/{name}.json").status_code == 200


def test_an_unknown_service_is_404_with_a_problem_body(client: TestClient) -> None:
    for method, path in [
        ("GET", "/api/services/nope"),
        ("POST", "/api/services/nope/start"),
        ("POST", "/api/services/nope/stop"),
        ("POST", "/api/services/nope/restart"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == PROBLEM
        body = response.json()
        assert body["detail"] == "No service named 'nope' exists."
        assert body["instance"] == path
    # A task is not a service.
    assert client.get("/api/services/hello").status_code == 404


def test_stop_start_and_restart(client: TestClient) -> None:
    before = eventually(lambda: up(client, "app", "running"))
    pids = [instance["pid"] for instance in before["instances"]]

    stopped = client.post("/api/services/app/stop")
    assert stopped.status_code == 200, stopped.text
    assert [i["state"] for i in stopped.json()["instances"]] == ["stopped", "stopped"]
    assert [i["pid"] for i in stopped.json()["instances"]] == [None, None]
    assert not any(is_alive(pid) for pid in pids)
    assert states(client, "db") == ["healthy"]  # its dependency keeps running

    started = client.post("/api/services/app/start")
    assert started.status_code == 200, started.text
    assert [i["state"] for i in started.json()["instances"]] != ["stopped", "stopped"]
    again = eventually(lambda: up(client, "app", "running"))
    new_pids = [instance["pid"] for instance in again["instances"]]
    assert set(new_pids).isdisjoint(pids) and all(is_alive(pid) for pid in new_pids)

    restarted = client.post("/api/services/app/restart")
    assert restarted.status_code == 200, restarted.text
    last = eventually(lambda: up(client, "app", "running"))
    assert set(instance["pid"] for instance in last["instances"]).isdisjoint(new_pids)
    assert not any(is_alive(pid) for pid in new_pids)


def test_a_service_without_autostart_starts_on_request(client: TestClient) -> None:
    assert states(client, "idle") == ["stopped"]
    client.post("/api/services/idle/start")
    body = eventually(lambda: up(client, "idle", "running"))
    assert is_alive(body["instances"][0]["pid"])


def test_reload_restarts_the_changed_service_only(
    client: TestClient, runyard: Runyard, config_path: Path
) -> None:
    db = eventually(lambda: up(client, "db", "healthy"))
    app = eventually(lambda: up(client, "app", "running"))
    idle_start = client.post("/api/services/idle/start")
    assert idle_start.status_code == 200
    idle = eventually(lambda: up(client, "idle", "running"))
    text = config_path.read_text(encoding="utf-8")
    text = text.replace("instances = 2\n", "instances = 1\n")  # app changes
    text = text.replace('[services.idle]\nrun = "exec sleep 600"\nautostart = false\n', "")
    text += '\n[services.extra]\nrun = "exec sleep 600"\n'
    config_path.write_text(text, encoding="utf-8")

    response = client.post("/api/daemon/reload")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["services_added"], body["services_removed"], body["services_changed"]) == (
        ["extra"],
        ["idle"],
        ["app"],
    )
    assert (body["added"], body["removed"], body["changed"]) == ([], [], [])
    names = [found["name"] for found in client.get("/api/services").json()["services"]]
    assert names == ["app", "blocked", "db", "extra", "sick"]
    # Unchanged: the same process.
    assert service(client, "db")["instances"][0]["pid"] == db["instances"][0]["pid"]
    assert is_alive(db["instances"][0]["pid"])
    # Changed: restarted with its new definition; removed: stopped.
    new_app = eventually(lambda: up(client, "app", "running"))
    assert len(new_app["instances"]) == 1
    assert new_app["instances"][0]["pid"] not in [i["pid"] for i in app["instances"]]
    assert not any(is_alive(instance["pid"]) for instance in app["instances"])
    assert not is_alive(idle["instances"][0]["pid"])
    assert client.get("/api/services/idle").status_code == 404
    # Added: started.
    extra = eventually(lambda: up(client, "extra", "running"))
    assert is_alive(extra["instances"][0]["pid"])


def test_a_dependant_waits_visibly_for_a_dependency_that_never_gets_healthy(
    client: TestClient,
) -> None:
    def probed_sick() -> dict[str, Any] | None:
        body = service(client, "sick")
        return body if body["instances"][0]["health_ok"] is False else None

    sick = eventually(probed_sick)
    (instance,) = sick["instances"]
    assert instance["state"] == "starting"
    assert instance["health"] == "exit 3: db down"
    assert is_alive(instance["pid"])
    (blocked,) = service(client, "blocked")["instances"]
    assert blocked["state"] == "waiting"
    assert blocked["reason"] == "waiting for sick"
    assert blocked["pid"] is None
