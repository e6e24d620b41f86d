"""A service's lifetimes as runs, in a real Runyard on SQLite and PostgreSQL, real processes."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient
from support.processes import eventually
from ulid import ULID

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.domain.models import EndReason, Run, RunStatus, TriggeredBy
from runyard.services.daemon import SERVICES_LOG
from runyard.store import RunStore
from runyard.store.files import make_private_directory

T = TypeVar("T")

CONFIG = """
[daemon]
data_dir = "data"
shutdown_timeout = "5s"

[tasks.hello]
run = "echo hi"

[services.web]
run = "echo web $RUNYARD_REPLICA_INDEX; exec sleep 600"
instances = 2

[services.flap]
run = "echo flap; exit 0"
restart_delay = "50ms"
restart_backoff = "constant"
restart_attempts = 100

[services.idle]
run = "exec sleep 600"
autostart = false
"""


@pytest.fixture
def runyard_environ(store_url: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUNYARD_DATABASE_URL": store_url}


def serving(runyard: Runyard) -> TestClient:
    """A client of the daemon's HTTP app; its block is the daemon's life (lifespan)."""
    return TestClient(create_app(runyard), headers={"Authorization": f"Bearer {runyard.token}"})


def runs_of(client: TestClient, name: str, path: str = "/api/runs") -> list[dict[str, Any]]:
    response = client.get(path, params={"task_name": name, "limit": 1000})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["runs"])
    runs: list[dict[str, Any]] = body["runs"]
    return runs


def runs_of_with(client: TestClient, headers: dict[str, str], name: str) -> list[Any]:
    body = client.get("/api/runs", params={"task_name": name}, headers=headers).json()
    runs: list[Any] = body["runs"]
    return runs


def test_lifetimes_are_listed_and_the_shutdown_stores_their_ends(
    runyard: Runyard, store_url: str
) -> None:
    def both_running(client: TestClient) -> list[dict[str, Any]] | None:
        found = runs_of(client, "web")
        running = [run for run in found if run["status"] == "running"]
        return running if len(running) == 2 else None

    # The daemon's shutdown (leaving the block) stops the services, then closes the store.
    with serving(runyard) as client:
        running = eventually(lambda: both_running(client))
        assert sorted(run["replica_index"] for run in running) == [0, 1]
        assert all(run["kind"] == run["triggered_by"] == "service" for run in running)
        # The spec's own list endpoint, under the service's name.
        assert len(runs_of(client, "web", "/api/tasks/web/runs")) == 2
        # A configured service without a lifetime yet lists empty; an unknown name is 404.
        assert runs_of(client, "idle") == []
        assert client.get("/api/runs", params={"task_name": "nope"}).status_code == 404
        ids = {run["id"] for run in running}
        # Ended lifetimes count in the run metrics under the service's name.
        counted = re.compile(
            r'^runyard_runs_total\{end_reason="success",task="flap"\} ([0-9.]+)$', re.M
        )

        def flap_counted() -> float | None:
            found = counted.search(client.get("/metrics").text)
            return float(found.group(1)) if found and float(found.group(1)) >= 2 else None

        assert eventually(flap_counted) >= 2

    store = RunStore.open(store_url)
    try:
        ended = [store.get_run(run_id) for run_id in sorted(ids)]
    finally:
        store.close()
    for run in ended:
        assert run is not None
        assert (run.status, run.end_reason) == (RunStatus.ENDED, EndReason.DAEMON_STOPPED)
        assert "because the daemon shut down" in run.description


def test_a_lifetime_whose_start_never_reached_the_store_is_recorded_crashed(
    tmp_path: Path, runyard_environ: dict[str, str], store_url: str, config_path: Path
) -> None:
    # What a daemon killed between noting a spawn and committing its row leaves:
    # a services.log line and no row. A line whose row exists is left alone.
    lost, stored, old_format = str(ULID()), str(ULID()), str(ULID())
    store = RunStore.open(store_url)
    try:
        store.apply(
            inserts=[
                Run(
                    id=stored,
                    task_name="web",
                    status=RunStatus.ENDED,
                    created_at=ULID.from_str(stored).datetime,
                    triggered_by=TriggeredBy.SERVICE,
                    end_reason=EndReason.SUCCESS,
                )
            ],
            updates=[],
        )
    finally:
        store.close()
    data_dir = tmp_path / "data"
    make_private_directory(data_dir)
    (data_dir / SERVICES_LOG).write_text(f"{lost} web 1\n{stored} web 0\n{old_format}\n")

    runyard = Runyard(load_config(config_path, environ=runyard_environ), environ=runyard_environ)
    with serving(runyard) as client:
        crashed = client.get(f"/api/runs/{lost}").json()
        assert (crashed["status"], crashed["end_reason"], crashed["exit_code"]) == (
            "ended",
            "crashed",
            -2,
        )
        assert (crashed["task_name"], crashed["replica_index"], crashed["kind"]) == (
            "web",
            1,
            "service",
        )
        assert crashed["created_at"].startswith(
            ULID.from_str(lost).datetime.isoformat()[:19]
        )  # the time its id carries
        assert crashed["description"].splitlines()[1:] == [
            "Crashed: the daemon stopped while the run was running.",
            "Its start was not stored before the daemon died.",
        ]
        assert client.get(f"/api/runs/{stored}").json()["end_reason"] == "success"
        assert client.get(f"/api/runs/{old_format}").status_code == 404


def test_retention_keeps_a_services_newest_lifetimes(client: TestClient, runyard: Runyard) -> None:
    eventually(lambda: len(runs_of(client, "flap")) >= 5 or None)
    stopped = client.post("/api/services/flap/stop")
    assert stopped.status_code == 200, stopped.text
    eventually(lambda: all(run["status"] == "ended" for run in runs_of(client, "flap")) or None)
    lifetimes = runs_of(client, "flap")  # newest first
    newest = [run["id"] for run in lifetimes[:2]]
    assert all(runyard.log_path(run["id"]).exists() for run in lifetimes)

    runyard.engine.recorder.keep({"flap": 2, "web": 1000})
    deleted = client.portal.call(runyard.engine.apply_retention)  # type: ignore[union-attr]

    assert deleted == len(lifetimes) - 2
    assert [run["id"] for run in runs_of(client, "flap")] == newest
    assert not any(runyard.log_path(run["id"]).exists() for run in lifetimes[2:])
    # The running lifetimes of another service are never touched.
    assert len(runs_of(client, "web")) == 2


def test_the_dashboard_shows_a_lifetime_without_stop_or_run_again(runyard: Runyard) -> None:
    with TestClient(create_app(runyard), follow_redirects=False) as page:
        form = page.get("/login")
        login_token = re.search(r'name="login_token" value="([^"]+)"', form.text)
        assert login_token is not None
        signed_in = page.post(
            "/login",
            data={"token": runyard.token, "login_token": login_token.group(1), "next": "/"},
        )
        assert signed_in.status_code == 303, signed_in.text
        api = {"Authorization": f"Bearer {runyard.token}"}

        def a_web_run() -> str | None:
            instance = page.get("/api/services/web", headers=api).json()["instances"][0]
            run_id: str | None = instance["run_id"]
            return run_id

        run_id = eventually(a_web_run)
        shown = page.get(f"/runs/{run_id}")
        assert shown.status_code == 200, shown.text
        assert '<dt>Service</dt><dd><a href="/services/web">web</a>, instance 0</dd>' in shown.text
        assert 'id="rerun"' not in shown.text and 'id="stop"' not in shown.text
        assert "Other lifetimes of web" in shown.text
        assert run_id in page.get("/runs", params={"task_name": "web"}).text
        # A form posted anyway is refused with the reason, and nothing is triggered.
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.get("/daemon").text)
        assert csrf is not None
        again = page.post(f"/runs/{run_id}/rerun", data={"csrf": csrf.group(1)})
        assert again.status_code == 303 and again.headers["location"] == f"/runs/{run_id}"
        assert (
            "Could not run again: it is a lifetime of service web: a service is started or "
            "restarted, not run again" in page.get(f"/runs/{run_id}").text
        )
        assert len(runs_of_with(page, api, "web")) == 2
