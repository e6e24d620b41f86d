"""Schedules over the REST API: task bodies, pause and resume, config reload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard

CONFIG = """
[daemon]
data_dir = "data"
shutdown_timeout = "5s"

[tasks.ticker]
run = "echo tick"
cron = "*/5 * * * *"

[tasks.manual]
run = "echo hi"
"""

PROBLEM = "application/problem+json"
SCHEDULE_KEYS = {
    "cron",
    "timezone",
    "jitter",
    "run_on_start",
    "catch_up",
    "max_catch_up_runs",
    "paused",
    "next_run_at",
}


def get_task(client: TestClient, name: str) -> dict[str, Any]:
    response = client.get(f"/api/tasks/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def parse_utc(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


def task_names(client: TestClient) -> list[str]:
    response = client.get("/api/tasks")
    assert response.status_code == 200, response.text
    return [task["name"] for task in response.json()["tasks"]]


def reload(client: TestClient) -> dict[str, Any]:
    response = client.post("/api/daemon/reload")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# ----- task bodies ------------------------------------------------------------------


def test_a_scheduled_task_shows_its_schedule_and_next_run(client: TestClient) -> None:
    before = datetime.now(UTC)
    body = get_task(client, "ticker")
    assert body.keys() >= SCHEDULE_KEYS
    assert body["cron"] == "*/5 * * * *"
    assert isinstance(body["timezone"], str) and body["timezone"]
    assert body["jitter"] == 0
    assert body["run_on_start"] is False
    assert body["catch_up"] == "latest"
    assert body["max_catch_up_runs"] == 100
    assert body["paused"] is False
    next_run_at = parse_utc(body["next_run_at"])
    assert before < next_run_at <= before + timedelta(minutes=5, seconds=1)
    assert next_run_at.minute % 5 == 0 and next_run_at.second == 0


def test_an_unscheduled_task_has_no_next_run(client: TestClient) -> None:
    body = get_task(client, "manual")
    assert body["cron"] is None
    assert body["timezone"] is None
    assert body["paused"] is False
    assert body["next_run_at"] is None


def test_the_task_list_carries_the_schedule_fields(client: TestClient) -> None:
    response = client.get("/api/tasks")
    assert response.status_code == 200
    tasks = {task["name"]: task for task in response.json()["tasks"]}
    assert tasks["ticker"]["cron"] == "*/5 * * * *"
    assert tasks["ticker"]["next_run_at"] is not None
    assert tasks["manual"]["next_run_at"] is None


def test_the_task_schema_documents_the_schedule_fields(client: TestClient) -> None:
    schema = client.get("/schemas/Task.json").json()
    assert schema["properties"].keys() >= SCHEDULE_KEYS
    reload_schema = client.get("/schemas/ReloadResponseBody.json")
    assert reload_schema.status_code == 200


# ----- pause and resume -----------------------------------------------------------


def test_pause_then_resume(client: TestClient) -> None:
    response = client.post("/api/tasks/ticker/pause")
    assert response.status_code == 200, response.text
    paused = response.json()
    assert paused["name"] == "ticker"
    assert paused["paused"] is True
    assert paused["next_run_at"] is None
    assert get_task(client, "ticker")["paused"] is True

    # Pausing twice changes nothing.
    again = client.post("/api/tasks/ticker/pause")
    assert again.status_code == 200
    assert again.json()["paused"] is True

    response = client.post("/api/tasks/ticker/resume")
    assert response.status_code == 200, response.text
    resumed = response.json()
    assert resumed["paused"] is False
    assert parse_utc(resumed["next_run_at"]) > datetime.now(UTC)
    assert get_task(client, "ticker")["paused"] is False


def test_a_paused_task_can_still_be_triggered(client: TestClient) -> None:
    assert client.post("/api/tasks/ticker/pause").status_code == 200
    response = client.post("/api/tasks/ticker/run", params={"wait": "true"})
    assert response.status_code == 201, response.text
    assert response.json()["end_reason"] == "success"


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pause_or_resume_of_an_unknown_task_is_404(client: TestClient, action: str) -> None:
    response = client.post(f"/api/tasks/nope/{action}")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert "nope" in response.json()["detail"]


def test_pause_and_reload_need_the_token(runyard: Runyard) -> None:
    with TestClient(create_app(runyard)) as anonymous:
        assert anonymous.post("/api/tasks/ticker/pause").status_code == 401
        assert anonymous.post("/api/tasks/ticker/resume").status_code == 401
        assert anonymous.post("/api/daemon/reload").status_code == 401


# ----- reload ----------------------------------------------------------------------


def test_reload_without_changes_reports_nothing(client: TestClient) -> None:
    body = reload(client)
    assert body["$schema"].endswith("/schemas/ReloadResponseBody.json")
    for key in (
        "added",
        "removed",
        "changed",
        "restart_required",
        "warnings",
        "skipped_runs",
        "accounts_changed",
    ):
        assert body[key] == [], key


def test_reload_reports_added_removed_and_changed_tasks(
    client: TestClient, config_path: Path
) -> None:
    config_path.write_text(
        """
[daemon]
data_dir = "data"
shutdown_timeout = "5s"

[tasks.ticker]
run = "echo tick"
cron = "*/10 * * * *"

[tasks.fresh]
run = "echo new"
cron = "0 * * * *"
""",
        encoding="utf-8",
    )
    body = reload(client)
    assert body["added"] == ["fresh"]
    assert body["removed"] == ["manual"]
    assert body["changed"] == ["ticker"]
    assert body["restart_required"] == []
    assert body["accounts_changed"] == []
    assert task_names(client) == ["fresh", "ticker"]
    assert get_task(client, "ticker")["cron"] == "*/10 * * * *"
    fresh = get_task(client, "fresh")
    assert fresh["cron"] == "0 * * * *"
    assert parse_utc(fresh["next_run_at"]) > datetime.now(UTC)
    assert client.get("/api/tasks/manual").status_code == 404


def test_reload_applies_account_limits_and_reports_the_accounts_changed(
    client: TestClient, config_path: Path, runyard: Runyard
) -> None:
    config_path.write_text(
        config_path.read_text(encoding="utf-8")
        + """
[accounts.acme]
max_concurrent_runs = 2
""",
        encoding="utf-8",
    )
    body = reload(client)
    # The implicit default account is gone: only acme is declared now.
    assert body["accounts_changed"] == ["acme", "default"]
    assert runyard.engine.account_limits == {"acme": 2}
    assert set(runyard.config.accounts) == {"acme"}


def test_reload_of_a_broken_file_lists_every_problem_and_changes_nothing(
    client: TestClient, config_path: Path
) -> None:
    config_path.write_text(
        """
[daemon]
data_dir = "data"

[tasks.ticker]
run = "echo tick"
max_concurrent = "lots"

[tasks.other]
run = "echo other"
retry_attempts = "many"
""",
        encoding="utf-8",
    )
    response = client.post("/api/daemon/reload")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["detail"] == "the new config is invalid; the running config is unchanged"
    errors = body["errors"]
    assert len(errors) >= 2
    assert all(error["location"] == "config" for error in errors)
    assert all(error["value"] == str(config_path) for error in errors)
    messages = " | ".join(error["message"] for error in errors)
    assert "max_concurrent" in messages
    assert "retry_attempts" in messages
    # The old config is still what runs.
    assert task_names(client) == ["manual", "ticker"]
    assert get_task(client, "ticker")["cron"] == "*/5 * * * *"


def test_reload_of_a_missing_file_is_refused(client: TestClient, config_path: Path) -> None:
    config_path.unlink()
    response = client.post("/api/daemon/reload")
    assert response.status_code == 422
    assert response.json()["errors"][0]["message"] == "file not found"
    assert task_names(client) == ["manual", "ticker"]


def test_reload_that_changes_the_port_asks_for_a_restart(
    client: TestClient, config_path: Path
) -> None:
    config_path.write_text(CONFIG.replace('data_dir = "data"', 'data_dir = "data"\nport = 9999'))
    body = reload(client)
    assert body["added"] == body["removed"] == body["changed"] == []
    assert len(body["restart_required"]) == 1
    assert "port" in body["restart_required"][0]
    assert "9999" in body["restart_required"][0]
