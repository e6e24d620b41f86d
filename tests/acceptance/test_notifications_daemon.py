"""Notifications from a real `runyard serve`: real receivers, the in-app list, validation.

The receivers (an HTTP server, an SMTP server) live in tests/integration.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from runyard_harness import TEST_TOKEN, cli_env, free_port, run_cli, start_daemon, stop_daemon

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from notification_receivers import HttpReceiver, SmtpReceiver, text_of  # noqa: E402

CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
external_url = "https://runyard.example.com/"

[notifications]
coalesce_window = "1h"
retry_budget = "30s"

[notifiers.hook]
urls = ["json://127.0.0.1:{http_port}/hook"]

[notifiers.mail]
urls = ["mailto://127.0.0.1:{smtp_port}?mode=insecure&from=runyard@example.com&to=ops@example.com"]
template = "templates/failure.txt"

[notifiers.down]
urls = ["json://127.0.0.1:{closed_port}/nobody"]
retry_budget = "2s"

[[routes]]
kinds = ["failed", "recovered"]
tasks = ["backup*"]
notifiers = ["hook", "mail"]

[[routes]]
kinds = ["timeout"]
notifiers = ["down"]

[tasks.backup-db]
run = "echo dumping; echo 'pg_dump: connection refused' >&2; exit 4"

[tasks.report]
run = "exit 1"

[tasks.slow]
run = "sleep 5"
timeout = "200ms"
graceful_stop = "1s"
"""

TEMPLATE = """\
{% set title = "[ops] " ~ task ~ " " ~ kind %}
{{ task }} ended {{ outcome }} with exit code {{ exit_code }} after {{ duration }}.
See {{ run_url }}
{% for line in log_lines %}> {{ line }}
{% endfor %}
"""


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    yield receiver
    receiver.close()


def write_config(tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver, port: int) -> Path:
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "failure.txt").write_text(TEMPLATE, "utf-8")
    config = tmp_path / "runyard.toml"
    config.write_text(
        CONFIG.format(
            port=port,
            data_dir=tmp_path / "data",
            http_port=http.port,
            smtp_port=smtp.port,
            closed_port=free_port(),
        ),
        "utf-8",
    )
    return config


def notifications(url: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{url}/api/notifications",
        params=params,
        headers={"Authorization": f"Bearer {TEST_TOKEN}"},
    )


def trigger(url: str, task: str) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/api/tasks/{task}/run?wait=true",
        headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def listed_when(url: str, check: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = notifications(url).json()
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_a_daemon_notifies_routes_folds_records_and_lists(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    port = free_port()
    config = write_config(tmp_path, http, smtp, port)
    output = tmp_path / "daemon.log"
    process, url = start_daemon(config, cli_env(RUNYARD_TOKEN=TEST_TOKEN), output, port)
    try:
        run = trigger(url, "backup-db")
        trigger(url, "report")  # no route takes report's failures
        (post,) = http.wait_for(1)
        (mail,) = smtp.wait_for(1)
        body = post.json()
        assert body["title"] == "runyard: backup-db failed (exit 4)"
        assert f"Run: https://runyard.example.com/runs/{run['id']}" in body["message"]
        assert "pg_dump: connection refused" in body["message"]
        # The mail notifier's own template, title included.
        assert mail["Subject"] == "[ops] backup-db failed"
        text = text_of(mail)
        assert "backup-db ended failed with exit code 4 after" in text
        assert f"See https://runyard.example.com/runs/{run['id']}" in text
        assert "> dumping" in text and "> pg_dump: connection refused" in text

        # Repeats inside the coalesce window are folded: nothing more is sent.
        for _ in range(5):
            trigger(url, "backup-db")
        trigger(url, "slow")  # a timeout, routed to a receiver that is down
        listed = listed_when(
            url,
            lambda b: b["total"] == 2 and all(n["status"] != "pending" for n in b["notifications"]),
        )
        assert len(http.posts) == 1 and len(smtp.messages) == 1
        newest, oldest = listed["notifications"]
        assert listed["dropped"] == 0
        assert listed["$schema"].endswith("/schemas/NotificationsResponseBody.json")
        schema = httpx.get(listed["$schema"])
        assert schema.status_code == 200 and "notifications" in schema.json()["properties"]
        assert (oldest["kind"], oldest["task_name"], oldest["run_id"], oldest["count"]) == (
            "failed",
            "backup-db",
            run["id"],
            1,
        )
        assert oldest["status"] == "delivered"
        assert oldest["notifiers"] == ["hook", "mail"]
        assert {(d["notifier"], d["outcome"], d["attempts"]) for d in oldest["deliveries"]} == {
            ("hook", "delivered", 1),
            ("mail", "delivered", 1),
        }
        # The mail URL is shown without its parameters; no password was in it.
        assert all("?" not in d["url"] for d in oldest["deliveries"])

        # The receiver that is down: retried for its 2 s budget, then recorded failed.
        assert (newest["kind"], newest["task_name"], newest["status"]) == (
            "timeout",
            "slow",
            "failed",
        )
        (delivery,) = newest["deliveries"]
        assert delivery["attempts"] >= 2
        assert "connection" in delivery["error"].lower()

        # Pagination and the status filter.
        page = notifications(url, limit=1, offset=1).json()
        assert page["total"] == 2
        assert [n["id"] for n in page["notifications"]] == [oldest["id"]]
        failed = notifications(url, status="failed").json()
        assert [n["id"] for n in failed["notifications"]] == [newest["id"]]
        refused = notifications(url, status="lost")
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"
        assert notifications(url, limit=0).status_code == 422

        # Each delivery's outcome is counted for Prometheus.
        metrics = httpx.get(
            f"{url}/metrics", headers={"Authorization": f"Bearer {TEST_TOKEN}"}
        ).text
        for line in (
            'runyard_notifications_total{notifier="hook",outcome="delivered"} 1.0',
            'runyard_notifications_total{notifier="mail",outcome="delivered"} 1.0',
            'runyard_notifications_total{notifier="down",outcome="failed"} 1.0',
        ):
            assert line in metrics.splitlines(), metrics
    finally:
        stop_daemon(process, output)
    log = output.read_text(errors="replace")
    assert "to down (json://127.0.0.1:" in log and "failed after" in log
    assert "Traceback" not in log


def test_validate_reports_every_notification_problem_at_once(
    tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    config = write_config(tmp_path, http, smtp, free_port())
    text = config.read_text("utf-8")
    text = text.replace('kinds = ["timeout"]', 'kinds = ["timeout", "exploded"]')
    text = text.replace('notifiers = ["down"]', 'notifiers = ["down", "pager"]')
    text = text.replace("json://127.0.0.1:", "jsn://127.0.0.1:", 1)
    config.write_text(text, "utf-8")
    (tmp_path / "templates" / "failure.txt").unlink()
    result = run_cli("--config", str(config), "validate", env=cli_env())
    assert result.returncode != 0
    for problem in (
        'notifiers.hook.urls[0]: Apprise has no service with the scheme "jsn"',
        "notifiers.mail.template: template file",
        'routes[1].kinds[1]: unknown kind "exploded"',
        'routes[1].notifiers[1]: unknown notifier "pager"',
    ):
        assert problem in result.stdout + result.stderr, result.stdout + result.stderr
