"""A real Prometheus server scrapes a real daemon with the token, and PromQL counts the runs.

Debian's `prometheus` is started by the test on 127.0.0.1 with a scrape
config that sends the daemon's token (`authorization.credentials_file`). The
test fails, never skips, when the binary is missing (`make test` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from runyard_harness import Daemon, free_port, stop_process, until

PROMETHEUS = "/usr/bin/prometheus"
SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: runyard
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["{target}"]
  - job_name: runyard-without-token
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
"""


@pytest.fixture
def prometheus(tmp_path: Path, daemon: Daemon) -> Iterator[str]:
    assert shutil.which(PROMETHEUS), f"{PROMETHEUS} is missing: apt-get install prometheus"
    token_file = tmp_path / "prometheus-token"
    token_file.write_text(daemon.token, encoding="utf-8")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        SCRAPE_CONFIG.format(token_file=token_file, target=daemon.url.removeprefix("http://")),
        encoding="utf-8",
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        until(ready, timeout=30)
        yield url
    finally:
        stop_process(process)  # type: ignore[arg-type]


def query(url: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(url: str, promql: str) -> float | None:
    result = query(url, promql)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_runyard_and_counts_the_runs(daemon: Daemon, prometheus: str) -> None:
    headers = {"Authorization": f"Bearer {daemon.token}"}
    for _ in range(3):
        response = httpx.post(
            f"{daemon.url}/api/tasks/hello/run?wait=true", headers=headers, timeout=30
        )
        assert response.status_code == 201, response.text
    response = httpx.post(f"{daemon.url}/api/tasks/fail/run?wait=true", headers=headers, timeout=30)
    assert response.json()["end_reason"] == "failed"

    def counted() -> bool:
        ok = scalar(prometheus, 'runyard_runs_total{task="hello",end_reason="success"}')
        failed = scalar(prometheus, 'runyard_runs_total{task="fail",end_reason="failed"}')
        return (ok, failed) == (3.0, 1.0)

    until(counted, timeout=30)

    # The scrape with the token is up; the one without is refused (401). Each
    # job has its own offset within the interval: wait for both to report.
    def health() -> dict[str, str]:
        return {item["metric"]["job"]: item["value"][1] for item in query(prometheus, "up")}

    until(lambda: len(health()) == 2, timeout=30)
    assert health() == {"runyard": "1", "runyard-without-token": "0"}
    # A histogram question: the 90th percentile of hello's run time so far, in seconds.
    p90 = scalar(
        prometheus,
        'histogram_quantile(0.9, sum by (le) (runyard_run_duration_seconds_bucket{task="hello"}))',
    )
    assert p90 is not None and 0 < p90 <= 0.5
    # Label values are the config's task names, nothing else.
    tasks = {item["metric"]["task"] for item in query(prometheus, "runyard_runs_active")}
    assert tasks == {"hello", "fail", "sleepy", "counter"}
    assert scalar(prometheus, "runyard_build_info") == 1.0
