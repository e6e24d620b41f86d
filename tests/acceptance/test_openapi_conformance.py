"""The REST API does what /openapi.json says, checked by schemathesis against a real daemon.

Every check schemathesis has (server errors, response schemas, status codes,
content types, headers, schema-valid requests accepted and invalid ones
refused, auth), each phase (coverage, fuzzing, stateful), a fixed number of
examples per operation, derandomised: the same requests on every run. Any
finding fails the test with schemathesis' report. The v3 routes are outside
/openapi.json by design (their contract is the hosted service's pages).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from runyard_harness import TEST_TOKEN, cli_env, free_port, start_daemon, stop_daemon

# Tasks that end at once (a trigger with ?wait=true answers quickly), and
# params of every kind the per-task trigger operations describe.
CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
max_concurrent_runs = 16

[tasks.hello]
run = 'echo "hello $WHO"'
max_queued = 100000

[[tasks.hello.params]]
name = "who"
env = "WHO"
default = "world"

[tasks.pick]
run = 'echo "$MODE" "$1"'
max_queued = 100000

[[tasks.pick.params]]
name = "mode"
required = true
choices = ["fast", "slow", "1", "true", "2.5"]

[[tasks.pick.params]]
name = "count"
arg = true

[tasks.fail]
run = 'echo oops >&2; exit 3'
max_queued = 100000

[services.idle]
run = "exec sleep 3600"
"""

SCHEMATHESIS_CONFIG = """\
[generation]
max-examples = {examples}
deterministic = true
database = "none"

# The run-event feed never ends: schemathesis reads it until the request
# timeout, then checks the events it got.
[[operations]]
include-path = "/api/events"
request-timeout = 1

# Random run ids only ever reach the 404 branch: a real, ended run lets the
# stop operation reach its 409 answer.
[[operations]]
include-path = "/api/runs/{{runId}}/stop"
parameters = {{ runId = "{run_id}" }}

# Random names only reach the 404 branch: a real service lets the start, stop
# and restart operations reach their answers.
[[operations]]
include-path = "/api/services/{{serviceName}}/start"
parameters = {{ serviceName = "idle" }}

[[operations]]
include-path = "/api/services/{{serviceName}}/stop"
parameters = {{ serviceName = "idle" }}

[[operations]]
include-path = "/api/services/{{serviceName}}/restart"
parameters = {{ serviceName = "idle" }}
"""

EXAMPLES_PER_OPERATION = 15
RUN_TIMEOUT = 600.0


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_the_api_conforms_to_its_openapi_document(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "runyard.toml"
    config.write_text(CONFIG.format(port=port, data_dir=tmp_path / "data"), encoding="utf-8")
    output = tmp_path / "daemon.log"
    process, url = start_daemon(config, cli_env(RUNYARD_TOKEN=TEST_TOKEN), output, port)
    try:
        ended = httpx.post(
            f"{url}/api/tasks/hello/run?wait=true",
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        )
        assert ended.status_code == 201, ended.text
        checks = tmp_path / "schemathesis.toml"
        checks.write_text(
            SCHEMATHESIS_CONFIG.format(examples=EXAMPLES_PER_OPERATION, run_id=ended.json()["id"]),
            "utf-8",
        )
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(checks),
                "--no-color",
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--header",
                f"Authorization: Bearer {TEST_TOKEN}",
                "--workers",
                "1",
                "--request-timeout",
                "10",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    finally:
        stop_daemon(process, output)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "No issues found" in report, report
    # Guards against a run that tested nothing, and so found nothing.
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    assert selected is not None, report
    assert len(set(selected.groups())) == 1, report
    assert {f"/api/tasks/{task}/run" for task in ("hello", "pick", "fail")} <= set(paths)
    assert int(selected.group(1)) == sum(len(item) for item in paths.values())
    assert "Traceback" not in output.read_text(errors="replace")
