"""Shared helpers of the v3 acceptance tests: a daemon with accounts and keys, and a v3 client.

The texts below are copied from the contract (`shared/spec/v3-*.txt` and
`shared/reference/v3-api-facts.md`), not imported from runyard, so a drift in
the implementation's wording fails the tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from runyard_harness import (
    TEST_TOKEN,
    cli_env,
    free_port,
    run_cli,
    start_daemon,
    stop_process,
    until,
)

# ----- the contract's texts ---------------------------------------------------------

LINK_KEY = "OPEN LINK IN BROWSER"
TASK_NOT_FOUND = "Task not found, please check the name and try again."
INVALID_KEY = "Invalid key"
QUOTA_EXCEEDED = "Quota exceeded"
RATE_LIMITED = "Rate limit exceeded. Try again in a few seconds."
MISSING_NAME = "Missing task name, you must send the name of the task that you wish to trigger."
SHAPE_MESSAGE = "Data must be sent as an array of arrays."
QUEUED_BODY = {
    "status": "queued",
    "message": "Axiom could not start due to a lack of available resources. "
    "The task has been queued and will retry in five minutes.",
}
REPORT_STATUSES = ("Running", "Success", "Failure")
REPORT_FIELDS = {"task_name", "status", "description", "created_at", "updated_at"}
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
VIEWER_HOST_RE = re.compile(r"^c-00\d\d-runyard$")
# The run's id, a dot, then at least 128 random bits of URL-safe base64.
PASSWORD_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}\.[A-Za-z0-9_-]{22,}$")

# Every endpoint that takes an account key, with the smallest body it accepts
# besides the key itself.
KEYED_BODIES: dict[str, dict[str, Any]] = {
    "trigger": {"name": "My First Automation"},
    "run-reports": {},
    "run-data": {"name": "My First Automation"},
    "remaining-runtime": {},
    "list-automations": {},
}
ALL_ENDPOINTS = (*KEYED_BODIES, "stop")

# ----- the daemon ---------------------------------------------------------------------

DAEMON_HEAD = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
max_concurrent_runs = 32
shutdown_timeout = "5s"
{daemon_extra}
"""

# A helper the tasks run: "tables" writes each input table to table<N>.json,
# "files" writes each row [filename, content] of the first table as a file.
WORKER = """\
import json, os, pathlib, sys

out = pathlib.Path(os.environ["RUNYARD_OUTPUT_DIR"])
tables = json.loads(pathlib.Path(os.environ["RUNYARD_INPUT"]).read_text(encoding="utf-8"))
if sys.argv[1] == "tables":
    for number, table in enumerate(tables, start=1):
        (out / f"table{number}.json").write_text(json.dumps(table), encoding="utf-8")
elif sys.argv[1] == "files":
    for name, content in tables[0]:
        (out / name).write_text(content, encoding="utf-8")
"""

# Waits until the file named in the first input cell exists: a run that holds
# its slot for exactly as long as the test wants.
GATE_SCRIPT = 'f=$(head -n 1 "$RUNYARD_INPUT_CSV"); while [ ! -e "$f" ]; do sleep 0.05; done'


@dataclass
class V3Daemon:
    url: str
    port: int
    token: str
    config: Path
    directory: Path
    keys: dict[str, str]  # label -> key
    env: dict[str, str]
    http: httpx.Client
    server_errors: int = 0  # 5xx answers seen: each already failed its test

    def _checked(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 500:
            self.server_errors += 1
        assert response.status_code < 500, (response.status_code, response.text)
        return response

    def post(
        self,
        endpoint: str,
        body: object = None,
        *,
        content: bytes | Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST `body` (JSON) or raw `content` to /api/v3/<endpoint>; fail on any 5xx."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if content is None:
            content = json.dumps(body).encode("utf-8")
        response = self.http.post(f"{self.url}/api/v3/{endpoint}", content=content, headers=sent)
        return self._checked(response)

    def call(self, endpoint: str, body: object) -> tuple[int, Any]:
        """POST JSON to a v3 endpoint; return (HTTP status, parsed JSON answer)."""
        response = self.post(endpoint, body)
        assert response.headers["content-type"].startswith("application/json"), response.headers
        return response.status_code, response.json()

    def rest(
        self, method: str, path: str, *, content: bytes | Iterator[bytes] | None = None
    ) -> httpx.Response:
        """Call the REST API with the daemon token; fail on any 5xx."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        response = self.http.request(method, f"{self.url}{path}", content=content, headers=headers)
        return self._checked(response)

    def runs_total(self) -> int:
        """Return how many runs the daemon has recorded, of every task and account."""
        response = self.rest("GET", "/api/runs?limit=1")
        assert response.status_code == 200, response.text
        total: int = response.json()["total"]
        return total

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.rest("GET", f"/api/runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        return run

    def newest_run(self, task_name: str) -> dict[str, Any]:
        """Return the REST view of the task's newest run."""
        response = self.rest("GET", f"/api/runs?task_name={task_name}&limit=1")
        assert response.status_code == 200, response.text
        [run] = response.json()["runs"]
        return self.run(run["id"])

    def wait_ended(self, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
        until(lambda: self.run(run_id)["status"] == "ended", timeout)
        return self.run(run_id)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("--config", str(self.config), *args, env=self.env)

    def trigger(self, key: str, name: str, data: object = None) -> str:
        """Trigger `name` and return the run id of its viewer link (the run must start)."""
        body: dict[str, Any] = {"key": key, "name": name}
        if data is not None:
            body["data"] = data
        status, answer = self.call("trigger", body)
        assert status == 200 and set(answer) == {LINK_KEY}, (status, answer)
        return run_id_of(answer[LINK_KEY])


def run_id_of(link: str) -> str:
    path = urlsplit(link).path
    assert path.startswith("/view/"), link
    return path.removeprefix("/view/")


def link_query(link: str) -> dict[str, str]:
    """Return the query parameters of a viewer link, each given exactly once."""
    query = parse_qs(urlsplit(link).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), link
    return {name: values[0] for name, values in query.items()}


def create_key(config: Path, account: str, label: str, env: dict[str, str]) -> str:
    """Create a key with the real CLI; return the key it prints alone on stdout."""
    result = run_cli(
        "--config", str(config), "keys", "create", "--account", account, "--label", label, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def key_id(daemon: V3Daemon, label: str) -> str:
    """Return the id `runyard keys list --json` shows for the key labelled `label`."""
    result = daemon.cli("keys", "list", "--json")
    assert result.returncode == 0, result.stderr
    [found] = [key["id"] for key in json.loads(result.stdout)["keys"] if key["label"] == label]
    return str(found)


def config_text(directory: Path, port: int, body: str, daemon_extra: str = "") -> str:
    worker = directory / "worker.py"
    worker.write_text(WORKER, encoding="utf-8")
    head = DAEMON_HEAD.format(port=port, data_dir=directory / "data", daemon_extra=daemon_extra)
    return head + body.replace("{python}", sys.executable).replace("{worker}", str(worker))


@contextmanager
def v3_daemon(
    directory: Path, body: str, keys: Mapping[str, str], daemon_extra: str = ""
) -> Iterator[V3Daemon]:
    """Start `runyard serve` with the config `body`; `keys` maps label -> account.

    On exit the daemon must stop cleanly (exit 0) and its log must hold no traceback:
    an error a response hid is still a failure. (After a 5xx answer, which already
    failed its test, the traceback it logged is not reported a second time.)
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "runyard.toml"
    config.write_text(config_text(directory, port, body, daemon_extra), encoding="utf-8")
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
    log_path = directory / "daemon.log"
    process, url = start_daemon(config, env, log_path, port)
    daemon: V3Daemon | None = None
    try:
        # Through the running daemon: without one, `keys create` needs its database.
        created = {
            label: create_key(config, account, label, env) for label, account in keys.items()
        }
        with httpx.Client(timeout=30.0) as http:
            daemon = V3Daemon(
                url=url,
                port=port,
                token=TEST_TOKEN,
                config=config,
                directory=directory,
                keys=created,
                env=env,
                http=http,
            )
            yield daemon
    finally:
        code = stop_process(process)
    output = log_path.read_text(errors="replace")
    assert code == 0, f"daemon exited {code}; its output:\n{output}"
    if daemon is not None and daemon.server_errors == 0:
        assert "Traceback" not in output, output


def poll(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Return the first truthy value of `check()`; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)
