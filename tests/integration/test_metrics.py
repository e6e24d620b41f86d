"""GET /metrics over a real Runyard: real config file, SQLite store and processes.

The exposition is read back with prometheus_client's own text parser, the way
a Prometheus server would read it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config
from runyard.exceptions import ConfigError

T = TypeVar("T")

CONFIG = """
[daemon]
data_dir = "data"
shutdown_timeout = "5s"

[tasks.hello]
run = "echo hi"

[tasks.fail]
run = "exit 3"

[tasks.sleeper]
run = "sleep 30"
graceful_stop = "1s"
max_concurrent = 1

[tasks.idle]
run = "true"

[accounts.acme]
tasks = ["hello"]
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def make_client(tmp_path: Path, extra: str = "") -> tuple[Runyard, TestClient]:
    path = tmp_path / "runyard.toml"
    path.write_text(CONFIG + extra, encoding="utf-8")
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    runyard = Runyard(load_config(path, environ=environ), environ=environ)
    return runyard, TestClient(create_app(runyard))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Runyard, TestClient]]:
    runyard, client = make_client(tmp_path)
    with client:
        client.headers["Authorization"] = f"Bearer {runyard.token}"
        yield runyard, client


def eventually(probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def run_to_end(client: TestClient, task: str) -> dict[str, Any]:
    response = client.post(f"/api/tasks/{task}/run", params={"wait": "true"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "ended", body
    return body


def test_metrics_need_the_token(served: tuple[Runyard, TestClient]) -> None:
    _runyard, client = served
    refused = client.get("/metrics", headers={"Authorization": ""})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    samples = scrape(client)
    assert value(samples, "runyard_build_info", version=__import__("runyard").__version__) == 1


def test_public_metrics_open_metrics_only(tmp_path: Path) -> None:
    _runyard, client = make_client(tmp_path, "\n[metrics]\npublic = true\n")
    with client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/api/runs").status_code == 401
        assert client.get("/metrics/").status_code in (401, 404)


def test_runs_are_counted_per_task_and_end_reason(served: tuple[Runyard, TestClient]) -> None:
    _runyard, client = served
    run_to_end(client, "hello")
    run_to_end(client, "hello")
    failed = run_to_end(client, "fail")
    assert failed["end_reason"] == "failed"
    samples = scrape(client)
    assert value(samples, "runyard_runs_total", task="hello", end_reason="success") == 2
    assert value(samples, "runyard_runs_total", task="fail", end_reason="failed") == 1
    assert value(samples, "runyard_run_duration_seconds_count", task="hello") == 2
    assert value(samples, "runyard_run_duration_seconds_bucket", task="hello", le="+Inf") == 2
    duration_sum = value(samples, "runyard_run_duration_seconds_sum", task="hello")
    assert duration_sum is not None and 0 < duration_sum < 10
    # The runs' rows went through the store writer: its commits are timed.
    commits = value(samples, "runyard_store_write_seconds_count")
    assert commits is not None and commits >= 3


def test_active_and_queued_runs_are_read_at_scrape_time(
    served: tuple[Runyard, TestClient],
) -> None:
    runyard, client = served
    first = client.post("/api/tasks/sleeper/run").json()
    client.post("/api/tasks/sleeper/run")  # max_concurrent = 1: this one queues

    def both_counted() -> Samples | None:
        samples = scrape(client)
        active = value(samples, "runyard_runs_active", task="sleeper")
        queued = value(samples, "runyard_runs_queued", task="sleeper")
        return samples if (active, queued) == (1, 1) else None

    samples = eventually(both_counted)
    # Every configured task has its gauges, runs or not.
    assert value(samples, "runyard_runs_active", task="idle") == 0
    assert value(samples, "runyard_runs_queued", task="idle") == 0
    assert client.post(f"/api/runs/{first['id']}/stop").status_code == 202
    # The waiting run takes the freed slot: the gauges follow the engine.
    eventually(lambda: runyard.engine.counts("sleeper") == (1, 0))
    samples = scrape(client)
    assert value(samples, "runyard_runs_queued", task="sleeper") == 0


def test_v3_triggers_are_counted_per_account_and_outcome(
    served: tuple[Runyard, TestClient],
) -> None:
    _runyard, client = served
    created = client.post("/api/keys", json={"account": "acme", "label": "metrics"})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    started = client.post("/api/v3/trigger", json={"key": key, "name": "hello"})
    assert started.status_code == 200, started.text
    unknown = client.post("/api/v3/trigger", json={"key": key, "name": "no such automation"})
    assert unknown.status_code == 404
    bad = client.post("/api/v3/trigger", json={"key": key, "name": "hello", "data": "x"})
    assert bad.status_code == 400
    samples = scrape(client)
    assert value(samples, "runyard_v3_triggers_total", account="acme", outcome="started") == 1
    assert value(samples, "runyard_v3_triggers_total", account="acme", outcome="not_found") == 1
    assert value(samples, "runyard_v3_triggers_total", account="acme", outcome="invalid") == 1
    # Every configured account, and only those, has its runtime gauge.
    runtime = {
        dict(labels)["account"]: minutes
        for (name, labels), minutes in samples.items()
        if name == "runyard_v3_runtime_used_minutes"
    }
    assert set(runtime) == {"acme"}
    assert 0 <= runtime["acme"] < 1


def test_label_values_come_from_the_config(served: tuple[Runyard, TestClient]) -> None:
    _runyard, client = served
    for name in ("x" * 90, "no-such-task", "../etc"):
        assert client.post(f"/api/tasks/{name}/run").status_code == 404
    tasks = {
        dict(labels).get("task")
        for (_name, labels) in scrape(client)
        if dict(labels).get("task") is not None
    }
    assert tasks == {"hello", "fail", "sleeper", "idle"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[metrics]\npublic = 'yes'\n", "metrics.public: expected true or false"),
        ("[metrics]\npublik = true\n", "metrics.publik: unknown key; did you mean 'public'?"),
        ("metrics = 1\n", "metrics: expected a table"),
    ],
)
def test_a_bad_metrics_table_is_named(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "runyard.toml"
    path.write_text(table + CONFIG, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert message in str(caught.value)


def test_a_reload_opens_and_closes_metrics_at_once(
    tmp_path: Path, served: tuple[Runyard, TestClient]
) -> None:
    runyard, client = served
    anonymous = {"Authorization": ""}
    assert client.get("/metrics", headers=anonymous).status_code == 401
    runyard.config.path.write_text(CONFIG + "\n[metrics]\npublic = true\n", encoding="utf-8")
    assert client.post("/api/daemon/reload").status_code == 200
    assert client.get("/metrics", headers=anonymous).status_code == 200
    runyard.config.path.write_text(CONFIG, encoding="utf-8")
    assert client.post("/api/daemon/reload").status_code == 200
    assert client.get("/metrics", headers=anonymous).status_code == 401
