"""The dashboard's services pages over HTTP: a real Runyard with real service processes.

Sign-in, CSRF, the 404 page, what the pages show and what the actions do;
the browser walk is in tests/browser/test_services_pages.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from fastapi.testclient import TestClient
from support.processes import eventually, is_alive

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.domain.models import EndReason, Run, RunStatus

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
env = { DB_PASSWORD = "hunter2-do-not-show", DB_MODE = "plain" }

[services.db.health_check]
run = "true"
interval = "100ms"

[services.app]
run = "exec sleep 600"
depends_on = ["db"]
instances = 2

[services.sick]
run = "exec sleep 600"
health_check = { run = "echo gate shut; exit 3", interval = "500ms", failures = 100 }

[services.blocked]
run = "exec sleep 600"
depends_on = ["sick"]
"""

NO_SERVICES = """
[daemon]
data_dir = "data"

[tasks.hello]
run = "echo hi"
"""


def _client(path: Path) -> TestClient:
    runyard = Runyard(load_config(path, environ={}), environ={})
    return TestClient(create_app(runyard), follow_redirects=False)


@pytest.fixture
def client(config_path: Path) -> Iterator[TestClient]:
    with _client(config_path) as client:
        yield client


def sign_in(client: TestClient) -> None:
    form = client.get("/login")
    login_token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert login_token is not None
    runyard: Runyard = client.app.state.runyard  # type: ignore[attr-defined]
    answer = client.post(
        "/login",
        data={"token": runyard.token, "login_token": login_token.group(1), "next": "/"},
    )
    assert answer.status_code == 303, answer.text


def csrf_of(client: TestClient, path: str = "/services") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def states(client: TestClient, name: str) -> list[str]:
    body = client.get(f"/api/services/{name}", headers=_bearer(client)).json()
    return [instance["state"] for instance in body["instances"]]


def pids(client: TestClient, name: str) -> list[int | None]:
    body = client.get(f"/api/services/{name}", headers=_bearer(client)).json()
    return [instance["pid"] for instance in body["instances"]]


def _bearer(client: TestClient) -> dict[str, str]:
    runyard: Runyard = client.app.state.runyard  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {runyard.token}"}


def all_in(client: TestClient, name: str, state: str) -> bool | None:
    return True if all(found == state for found in states(client, name)) else None


def probed(client: TestClient, name: str) -> bool | None:
    body = client.get(f"/api/services/{name}", headers=_bearer(client)).json()
    return True if all(i["health_ok"] is not None for i in body["instances"]) else None


def instance_row(html: str, service: str, index: int) -> str:
    """Return the <tr> of one instance in the services table."""
    body = re.search(rf'<tbody data-service="{re.escape(service)}">(.*?)</tbody>', html, re.S)
    assert body is not None, f"no rows for {service}"
    row = re.search(rf'<tr data-instance="{index}">(.*?)</tr>', body.group(1), re.S)
    assert row is not None, f"no row for {service}[{index}]"
    return row.group(1)


ACTIONS = ["start", "stop", "restart"]


def test_pages_and_actions_need_a_session(client: TestClient) -> None:
    for path in ("/services", "/services/db"):
        answer = client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/login?next=")
    eventually(lambda: all_in(client, "db", "healthy"))
    before = pids(client, "db")
    for action in ACTIONS:
        answer = client.post(f"/services/db/{action}", data={"csrf": "anything"})
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/login?next=")
    # The bearer token opens the API, not the dashboard's actions.
    answer = client.post("/services/db/stop", headers=_bearer(client))
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert pids(client, "db") == before and is_alive(before[0] or 0)


def test_actions_without_the_csrf_token_change_nothing(client: TestClient) -> None:
    sign_in(client)
    eventually(lambda: all_in(client, "db", "healthy"))
    before = pids(client, "db")
    for action in ACTIONS:
        for data in ({}, {"csrf": "forged"}):
            answer = client.post(f"/services/db/{action}", data=data)
            assert answer.status_code == 403, (action, data)
            assert "Form refused" in answer.text
    assert states(client, "db") == ["healthy"]
    assert pids(client, "db") == before and is_alive(before[0] or 0)


def test_an_unknown_service_is_the_404_page(client: TestClient) -> None:
    sign_in(client)
    csrf = csrf_of(client)
    for method, path in [
        ("GET", "/services/nope"),
        ("GET", "/services/hello"),  # a task is not a service
        ("POST", "/services/nope/start"),
        ("POST", "/services/nope/stop"),
        ("POST", "/services/nope/restart"),
    ]:
        answer = client.request(method, path, data={"csrf": csrf} if method == "POST" else None)
        assert answer.status_code == 404, (method, path, answer.text)
        assert "<h1>Not found</h1>" in answer.text
        assert "No service is called" in answer.text
    # An unknown service still needs the form's token.
    assert client.post("/services/nope/stop", data={"csrf": "forged"}).status_code == 403


def test_the_list_shows_each_instance_with_its_state_and_the_waiting_reason(
    client: TestClient,
) -> None:
    sign_in(client)
    eventually(lambda: all_in(client, "db", "healthy"))
    eventually(lambda: all_in(client, "app", "running"))
    eventually(lambda: all_in(client, "blocked", "waiting"))
    eventually(lambda: probed(client, "sick"))
    html = client.get("/services").text
    assert '<a href="/services" aria-current="page">Services</a>' in html
    assert 'data-live="poll"' in html
    db = instance_row(html, "db", 0)
    assert 'data-state="healthy">healthy</span>' in db
    assert "passed" in db and "exit 0" in db
    (db_pid,) = pids(client, "db")
    assert f">{db_pid}</td>" in db
    # Each instance links to its current lifetime's run (and so its live log).
    (db_instance,) = client.get("/api/services/db", headers=_bearer(client)).json()["instances"]
    assert f'<a href="/runs/{db_instance["run_id"]}"' in db
    assert client.get(f"/runs/{db_instance['run_id']}").status_code == 200
    for index, pid in enumerate(pids(client, "app")):
        row = instance_row(html, "app", index)
        assert 'data-state="running">running</span>' in row
        assert f">{pid}</td>" in row
        assert "no health check" in row
    blocked = instance_row(html, "blocked", 0)
    assert 'data-state="waiting">waiting</span>' in blocked
    assert "waiting for sick" in blocked
    sick = instance_row(html, "sick", 0)
    assert 'data-state="starting">starting</span>' in sick
    probe = '<span class="probe bad">failed</span>: <span class="mono">exit 3: gate shut</span>'
    assert probe in sick
    # Ready: db and app; not: sick (starting) and blocked (waiting).
    assert "2 of 4 ready" in html
    for name in ("app", "blocked", "db", "sick"):
        for action in ACTIONS:
            assert f'action="/services/{name}/{action}"' in html
    # The overview counts them.
    assert re.search(r'id="services-up">2 / 4</span>', client.get("/").text)


def test_the_service_page_shows_its_definition_dependencies_and_lifetimes(
    client: TestClient,
) -> None:
    sign_in(client)
    eventually(lambda: all_in(client, "db", "healthy"))
    html = client.get("/services/db").text
    assert "<h1>Service db</h1>" in html
    assert "exec sleep 600" in html
    assert 'run <span class="mono">true</span> every 100 ms, timeout 5 s' in html
    assert "hunter2-do-not-show" not in html  # secret-looking values are masked
    assert "DB_MODE" in html and "plain" in html
    assert '<a href="/services/app">app</a>' in html  # needed by app
    assert "Recent lifetimes" in html
    app = client.get("/services/app").text
    assert '<ul class="plain" id="dependencies">' in app
    assert '<li><a href="/services/db">db</a> <span class="badge ok">ready</span></li>' in app
    assert app.count('<tr data-instance="') == 2
    blocked = client.get("/services/blocked").text
    sick_link = '<li><a href="/services/sick">sick</a> <span class="badge warn">not ready</span>'
    assert sick_link in blocked


def test_the_service_page_lists_the_runs_named_after_it_newest_first(
    client: TestClient, make_run: Callable[..., Run]
) -> None:
    # The instance's own lifetime, recorded as a run, beside two older runs of db
    # stored by hand (and one of another service).
    runyard: Runyard = client.app.state.runyard  # type: ignore[attr-defined]

    def current_lifetime() -> str | None:
        run_id = runyard.services.get("db").instances[0].run_id
        return run_id if run_id and runyard.store.get_run(run_id) else None

    current = eventually(current_lifetime)
    now = runyard.clock()
    older = make_run(
        "db",
        RunStatus.ENDED,
        created_at=now - timedelta(minutes=10),
        start_at=now - timedelta(minutes=10),
        end_at=now - timedelta(minutes=9),
        end_reason=EndReason.FAILED,
        exit_code=1,
        replica_index=0,
    )
    newer = make_run(
        "db",
        RunStatus.RUNNING,
        created_at=now - timedelta(minutes=1),
        start_at=now - timedelta(minutes=1),
        replica_index=0,
    )
    other = make_run("app", RunStatus.ENDED, created_at=now, end_reason=EndReason.SUCCESS)
    runyard.store.apply([older, newer, other], [])
    sign_in(client)
    html = client.get("/services/db").text
    table = re.search(r'<table class="runs" id="lifetimes">(.*?)</table>', html, re.S)
    assert table is not None
    ids = re.findall(r'<a class="mono" href="/runs/([0-9A-Z]{26})">', table.group(1))
    assert ids == [current, newer.id, older.id]
    assert '<span class="badge bad">failed</span>' in table.group(1)
    assert '<span class="badge live">running</span>' in table.group(1)
    assert '<a href="/runs?task_name=db">Every lifetime of db</a>' in html
    assert "No lifetimes recorded yet." in client.get("/services/blocked").text


def test_stop_start_and_restart_from_the_dashboard(client: TestClient) -> None:
    sign_in(client)
    eventually(lambda: all_in(client, "app", "running"))
    first = pids(client, "app")
    csrf = csrf_of(client)

    answer = client.post("/services/app/stop", data={"csrf": csrf, "back": "/services"})
    assert answer.status_code == 303 and answer.headers["location"] == "/services"
    assert states(client, "app") == ["stopped", "stopped"]
    assert not any(is_alive(pid or 0) for pid in first)
    page = client.get("/services").text
    assert "Stopped app (0: stopped, 1: stopped)." in page
    assert 'data-state="stopped">stopped</span>' in instance_row(page, "app", 0)

    answer = client.post("/services/app/start", data={"csrf": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/services/app"
    assert "Started app" in client.get("/services/app").text
    eventually(lambda: all_in(client, "app", "running"))
    second = pids(client, "app")
    assert set(second).isdisjoint(first) and all(is_alive(pid or 0) for pid in second)

    # `back` must be a path on this site.
    answer = client.post(
        "/services/app/restart", data={"csrf": csrf, "back": "https://elsewhere.example/"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    eventually(lambda: all_in(client, "app", "running"))
    third = pids(client, "app")
    assert set(third).isdisjoint(second) and not any(is_alive(pid or 0) for pid in second)


def test_without_services_the_nav_has_no_services_link(tmp_path: Path) -> None:
    path = tmp_path / "runyard.toml"
    path.write_text(NO_SERVICES, encoding="utf-8")
    with _client(path) as client:
        sign_in(client)
        overview = client.get("/").text
        assert 'href="/services"' not in overview
        assert "services ready" not in overview
        page = client.get("/services")
        assert page.status_code == 200
        assert "No services yet" in page.text
        assert '<a href="/services" aria-current="page">Services</a>' in page.text
