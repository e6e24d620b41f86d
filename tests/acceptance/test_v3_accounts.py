"""v3 accounts against real daemons: rate limit, visibility, quota, concurrency, keys.

Two daemons, each started once for the module: the main one holds every account
whose state the tests can share (each test uses its own keys and tasks, and
stops the runs it started); the quota daemon gives `acme` a tiny allowance.
Everything is observed over HTTP: the v3 API with account keys, and the REST
API with the daemon token.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from runyard_harness import (
    TEST_TOKEN,
    cli_env,
    free_port,
    run_cli,
    start_daemon,
    stop_process,
    until,
)

from runyard.domain.accounts import UNLIMITED_MINUTES

TASK_NOT_FOUND = "Task not found, please check the name and try again."
INVALID_KEY = {"status": "error", "message": "Invalid key"}
QUOTA_EXCEEDED = {"status": "error", "message": "Quota exceeded"}
RATE_LIMITED = {"status": "error", "message": "Rate limit exceeded. Try again in a few seconds."}
QUEUED = {
    "status": "queued",
    "message": "Axiom could not start due to a lack of available resources. "
    "The task has been queued and will retry in five minutes.",
}
LINK_KEY = "OPEN LINK IN BROWSER"
ENDPOINTS = ["trigger", "run-reports", "run-data", "remaining-runtime", "list-automations"]

MAIN_CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
max_concurrent_runs = 32
shutdown_timeout = "5s"

[defaults]
graceful_stop = "2s"

[tasks.acme-sleep]
run = 'echo sleeping; sleep 60'
max_concurrent = 10

[tasks.acme-quick]
run = 'echo quick'
max_concurrent = 10

[tasks.zeta-sleep]
run = 'sleep 60'
max_concurrent = 10

[tasks.zeta-quick]
run = 'echo quick'
max_concurrent = 10

[tasks.burst-noop]
run = 'true'

[tasks.meter-sleep]
run = 'sleep 60'
max_concurrent = 10

[accounts.acme]
tasks = ["acme-*"]
max_concurrent_runs = 1

[accounts.zeta]
tasks = ["zeta-*"]

# Shares every task pattern with acme and zeta: sees their tasks, never their runs.
[accounts.ops]
tasks = ["*"]

[accounts.burst]
tasks = ["burst-*"]

[accounts.slow]
tasks = ["burst-*"]
rate_limit_per_minute = 5

[accounts.meter]
tasks = ["meter-*"]
max_concurrent_runs = 1
runtime_allowance_minutes = 500
"""

QUOTA_CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
shutdown_timeout = "5s"

[tasks.acme-work]
run = 'sleep 4'

[tasks.acme-instant]
run = 'true'

[tasks.zeta-work]
run = 'true'

[accounts.acme]
tasks = ["acme-*"]
runtime_allowance_minutes = 0.02  # 1.2 seconds

[accounts.zeta]
tasks = ["zeta-*"]

# In-app only (no URLs): the notifications are listed by /api/notifications.
[notifiers.inbox]

[[routes]]
kinds = ["quota_exhausted"]
notifiers = ["inbox"]
"""

RELOAD_CONFIG = """\
[daemon]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
shutdown_timeout = "5s"

[tasks.acme-sleep]
run = 'echo sleeping; sleep 60'
max_concurrent = 10
graceful_stop = "2s"

[accounts.acme]
tasks = ["acme-*"]
max_concurrent_runs = 1
"""

# Keys made when the main daemon starts: (name, account). Each test spends its own,
# so one test's rate-limit budget never leaks into another's.
MAIN_KEYS = [
    ("acme", "acme"),
    ("zeta", "zeta"),
    ("ops", "ops"),
    ("meter", "meter"),
    ("burst-setup", "burst"),
    ("burst", "burst"),
    ("burst-a", "burst"),
    ("burst-b", "burst"),
    ("slow-a", "slow"),
    ("slow-b", "slow"),
    ("zeta-kept", "zeta"),
]
QUOTA_KEYS = [("acme", "acme"), ("zeta", "zeta")]
KEY_ID_RE = re.compile(r"created key (\w+) for account")


@dataclass
class V3Daemon:
    """A running daemon, its account keys, and clients of its v3 and REST APIs."""

    url: str
    config: Path
    env: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=15.0))

    def call(self, endpoint: str, key: str | None, **body: Any) -> httpx.Response:
        """POST a v3 call with `key` in the body (left out when None)."""
        payload = dict(body) if key is None else {"key": key, **body}
        return self.client.post(f"{self.url}/api/v3/{endpoint}", json=payload)

    def ok(self, endpoint: str, key: str, **body: Any) -> dict[str, Any]:
        response = self.call(endpoint, key, **body)
        assert response.status_code == 200, (endpoint, response.status_code, response.text)
        answer: dict[str, Any] = response.json()
        return answer

    def remaining(self, key: str) -> dict[str, Any]:
        answer = self.ok("remaining-runtime", key)
        assert answer["status"] == "success"
        data: dict[str, Any] = answer["data"]
        assert set(data) == {"used", "allowance", "remaining"}
        return data

    def reports(self, key: str, count: int = 1000) -> list[dict[str, Any]]:
        answer = self.ok("run-reports", key, count=count)
        assert answer["status"] == "success"
        reports: list[dict[str, Any]] = answer["data"]["reports"]
        return reports

    def new_key(self, account: str) -> tuple[str, str]:
        """Create a key with the real CLI; return (key, key id)."""
        done = run_cli(
            "--config", str(self.config), "keys", "create", "--account", account, env=self.env
        )
        assert done.returncode == 0, done.stderr
        found = KEY_ID_RE.search(done.stderr)
        assert found is not None, done.stderr
        return done.stdout.strip(), found.group(1)

    def rest(self, method: str, path: str, **params: Any) -> Any:
        response = self.client.request(
            method,
            f"{self.url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        )
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()

    def runs(self, task_name: str, status: str | None = None) -> list[dict[str, Any]]:
        """Return every run of a task, newest first, through the REST API."""
        params: dict[str, Any] = {"task_name": task_name, "limit": 500}
        if status is not None:
            params["status"] = status
        runs: list[dict[str, Any]] = self.rest("GET", "/api/runs", **params)["runs"] or []
        return runs

    def account_runs(self, task_name: str, account: str, status: str | None = None) -> list[Any]:
        return [run for run in self.runs(task_name, status) if run.get("account") == account]

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.rest("GET", f"/api/runs/{run_id}")
        return run

    def stop(self, run_id: str) -> None:
        response = self.client.post(
            f"{self.url}/api/runs/{run_id}/stop",
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        )
        # 409: it had ended already, which is all a clean-up asks for.
        assert response.status_code in (200, 202, 409), response.text

    def wait_ended(self, run_id: str, timeout: float = 20.0) -> dict[str, Any]:
        until(lambda: self.run(run_id)["status"] == "ended", timeout)
        return self.run(run_id)


@contextlib.contextmanager
def serve(home: Path, config_text: str, keys: list[tuple[str, str]]) -> Iterator[V3Daemon]:
    """Run `runyard serve` with this config and keys made by the CLI; stop it with SIGTERM."""
    port = free_port()
    config = home / "runyard.toml"
    config.write_text(config_text.format(port=port, data_dir=home / "data"), encoding="utf-8")
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
    output = home / "daemon.log"
    process, url = start_daemon(config, env, output, port)
    daemon = V3Daemon(url=url, config=config, env=env)
    try:
        # The CLI writes keys straight into the database the daemon reads.
        with ThreadPoolExecutor(max_workers=len(keys)) as pool:
            made = list(pool.map(lambda item: daemon.new_key(item[1]), keys))
        daemon.keys = {name: key for (name, _), (key, _id) in zip(keys, made, strict=True)}
        yield daemon
    finally:
        daemon.client.close()
        code = stop_process(process)
    assert code == 0, f"daemon exited {code}; its output:\n{output.read_text(errors='replace')}"


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V3Daemon]:
    with serve(tmp_path_factory.mktemp("v3-main"), MAIN_CONFIG, MAIN_KEYS) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def quota(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V3Daemon]:
    with serve(tmp_path_factory.mktemp("v3-quota"), QUOTA_CONFIG, QUOTA_KEYS) as daemon:
        yield daemon


def link_run_id(answer: dict[str, Any]) -> str:
    """Return the run id of a started trigger's viewer link (`<base>/view/<id>?...`)."""
    assert set(answer) == {LINK_KEY}, answer
    parts = urlsplit(str(answer[LINK_KEY]))
    assert parts.scheme == "http" and parts.path.startswith("/view/")
    query = parse_qs(parts.query)
    assert re.fullmatch(r"c-00\d\d-runyard", query["host"][0])
    return parts.path.rsplit("/", 1)[1]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def poll(check: Callable[[], bool], timeout: float, interval: float) -> None:
    """Like `until`, for checks that spend rate-limit budget: fewer, spaced calls."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


# ----- rate limit ---------------------------------------------------------------------


def _body_for(endpoint: str) -> dict[str, Any]:
    return {"name": "burst-noop"} if endpoint in ("trigger", "run-data") else {}


def test_100_calls_a_minute_per_key_shared_by_every_endpoint(main: V3Daemon) -> None:
    # One run exists beforehand (another key's budget), so /run-data answers 200.
    main.ok("trigger", main.keys["burst-setup"], name="burst-noop")
    runs_before = len(main.runs("burst-noop"))
    key = main.keys["burst"]
    total, callers = 130, 20
    plan = [ENDPOINTS[index % len(ENDPOINTS)] for index in range(total)]
    results: list[tuple[str, int, dict[str, Any]]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(callers)

    def caller(number: int) -> None:
        with httpx.Client(timeout=15.0) as client:
            barrier.wait()
            for endpoint in plan[number::callers]:
                body = {"key": key, **_body_for(endpoint)}
                response = client.post(f"{main.url}/api/v3/{endpoint}", json=body)
                with lock:
                    results.append((endpoint, response.status_code, response.json()))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=callers) as pool:
        for done in [pool.submit(caller, number) for number in range(callers)]:
            done.result()
    assert time.monotonic() - started < 30, "the burst must fit well inside one minute"

    statuses = sorted(status for _, status, _ in results)
    assert statuses == [200] * 100 + [429] * 30
    assert all(body == RATE_LIMITED for _, status, body in results if status == 429)
    # Every endpoint got some of the 100: the budget is one, shared by all of them.
    assert {endpoint for endpoint, status, _ in results if status == 200} == set(ENDPOINTS)
    for endpoint in ENDPOINTS:
        refused = main.call(endpoint, key, **_body_for(endpoint))
        assert (refused.status_code, refused.json()) == (429, RATE_LIMITED), endpoint
        # When a slot frees: the oldest of the 100 calls leaves the minute's window.
        assert 1 <= int(refused.headers["Retry-After"]) <= 60, endpoint

    # A refused trigger had no effect: only the allowed ones made runs.
    allowed_triggers = sum(
        1 for endpoint, status, _ in results if endpoint == "trigger" and status == 200
    )
    assert len(main.runs("burst-noop")) == runs_before + allowed_triggers


def test_each_key_has_its_own_budget(main: V3Daemon) -> None:
    first, second = main.keys["burst-a"], main.keys["burst-b"]
    statuses = [main.call("list-automations", first).status_code for _ in range(101)]
    assert statuses == [200] * 100 + [429]
    # Same account, another key: a full budget of its own.
    statuses = [main.call("remaining-runtime", second).status_code for _ in range(100)]
    assert statuses == [200] * 100
    assert main.call("remaining-runtime", second).json() == RATE_LIMITED
    assert main.call("list-automations", first).json() == RATE_LIMITED


def test_rate_limit_per_minute_from_the_config(main: V3Daemon) -> None:
    for key in (main.keys["slow-a"], main.keys["slow-b"]):
        answers = [main.call("list-automations", key) for _ in range(7)]
        assert [answer.status_code for answer in answers] == [200] * 5 + [429] * 2
        assert answers[5].json() == RATE_LIMITED
        assert answers[0].json() == {"status": "success", "data": {"names": ["burst-noop"]}}


# ----- accounts see their own tasks and runs only ----------------------------------------


@pytest.mark.parametrize(
    ("account", "names"),
    [
        ("acme", ["acme-quick", "acme-sleep"]),
        ("zeta", ["zeta-quick", "zeta-sleep"]),
        (
            "ops",
            [
                "acme-quick",
                "acme-sleep",
                "burst-noop",
                "meter-sleep",
                "zeta-quick",
                "zeta-sleep",
            ],
        ),
    ],
)
def test_list_automations_shows_only_the_accounts_own(
    main: V3Daemon, account: str, names: list[str]
) -> None:
    answer = main.ok("list-automations", main.keys[account])
    assert answer == {"status": "success", "data": {"names": names}}


@pytest.mark.parametrize(
    ("account", "name"),
    [
        ("acme", "zeta-quick"),
        ("zeta", "acme-quick"),
        ("acme", "meter-sleep"),
        ("zeta", "ACME-quick"),
        ("acme", "Acme-quick"),  # names match exactly: case counts
        ("acme", "acme-quick "),  # and whitespace
    ],
)
def test_another_accounts_automation_is_not_found(main: V3Daemon, account: str, name: str) -> None:
    task_name = name.strip().lower()
    before = len(main.runs(task_name))
    key = main.keys[account]
    for endpoint in ("trigger", "run-data"):
        answer = main.call(endpoint, key, name=name)
        assert (answer.status_code, answer.json()) == (
            404,
            {"status": "error", "message": TASK_NOT_FOUND},
        ), endpoint
    assert len(main.runs(task_name)) == before


def test_run_reports_show_only_the_accounts_own_runs(main: V3Daemon) -> None:
    triggers = [
        ("acme", "acme-quick"),
        ("ops", "acme-quick"),  # same task, another account
        ("zeta", "zeta-quick"),
        ("ops", "zeta-quick"),
        ("acme", "acme-quick"),
        ("zeta", "zeta-quick"),
    ]
    for account, name in triggers:
        answer = main.ok("trigger", main.keys[account], name=name)
        assert LINK_KEY in answer or answer == QUEUED
    until(
        lambda: all(
            run["status"] == "ended"
            for name in ("acme-quick", "zeta-quick")
            for run in main.runs(name)
        )
    )

    for account in ("acme", "zeta", "ops"):
        reports = main.reports(main.keys[account])
        # The REST API (daemon token) shows every run with its account: the account's own,
        # newest first, are exactly what its reports hold.
        own = sorted(
            (
                run
                for name in ("acme-quick", "acme-sleep", "zeta-quick", "zeta-sleep")
                for run in main.account_runs(name, account)
            ),
            key=lambda run: (run["created_at"], run["id"]),
            reverse=True,
        )
        assert [r["task_name"] for r in reports] == [run["task_name"] for run in own], account
        assert [parse_time(r["created_at"]) for r in reports] == [
            parse_time(run["created_at"]) for run in own
        ]
        assert len(reports) >= 2
    acme_reports = main.reports(main.keys["acme"])
    assert {report["task_name"] for report in acme_reports} <= {"acme-quick", "acme-sleep"}
    # ops triggered acme-quick too; acme's reports and run-data never show those runs.
    ops_acme = main.account_runs("acme-quick", "ops")
    acme_acme = main.account_runs("acme-quick", "acme")
    assert len(ops_acme) == 1 and len(acme_acme) >= 2
    ops_created = parse_time(ops_acme[0]["created_at"])
    assert ops_created not in {parse_time(report["created_at"]) for report in acme_reports}


# ----- concurrency: queued, lanes, FIFO ------------------------------------------------------


def test_a_saturated_account_queues_while_others_start(main: V3Daemon) -> None:
    acme, zeta, ops = main.keys["acme"], main.keys["zeta"], main.keys["ops"]
    first = link_run_id(main.ok("trigger", acme, name="acme-sleep"))
    until(lambda: main.run(first)["status"] == "running")
    # acme's one slot is taken: more triggers queue, for the same task or another one.
    assert main.ok("trigger", acme, name="acme-sleep") == QUEUED
    assert main.ok("trigger", acme, name="acme-quick") == QUEUED
    [second] = [run["id"] for run in main.account_runs("acme-sleep", "acme", "pending")]
    [quick] = [run["id"] for run in main.account_runs("acme-quick", "acme", "pending")]

    # Other accounts start at once: zeta, and ops on the very same task as acme.
    zeta_run = link_run_id(main.ok("trigger", zeta, name="zeta-sleep"))
    ops_run = link_run_id(main.ok("trigger", ops, name="acme-sleep"))
    assert main.run(zeta_run)["status"] in ("running", "ended")
    assert main.run(ops_run)["status"] in ("running", "ended")

    # No queued status on this API: waiting runs report Running, and say why they wait.
    newest = main.reports(acme, count=3)
    assert [(r["task_name"], r["status"]) for r in newest] == [
        ("acme-quick", "Running"),
        ("acme-sleep", "Running"),
        ("acme-sleep", "Running"),
    ]
    assert "remotely triggered" in newest[0]["description"]
    assert "Queued" in newest[0]["description"] and "Queued" in newest[1]["description"]
    data = main.ok("run-data", acme, name="acme-quick")
    assert data == {"status": "Running", "data": {}}
    assert main.run(second)["status"] == "pending" and "start_at" not in main.run(second)

    # acme's running run ends: its oldest queued run starts, the later one still waits.
    main.stop(first)
    main.wait_ended(first)
    until(lambda: main.run(second)["status"] == "running")
    assert main.run(quick)["status"] == "pending"
    main.stop(second)
    main.wait_ended(second)
    finished = main.wait_ended(quick)
    assert finished["end_reason"] == "success"
    assert parse_time(main.run(second)["start_at"]) < parse_time(finished["start_at"])
    assert parse_time(finished["start_at"]) >= parse_time(main.run(second)["end_at"])
    assert main.ok("run-data", acme, name="acme-quick")["status"] == "Success"
    assert [r["status"] for r in main.reports(acme, count=3)] == [
        "Success",
        "Failure",  # a stopped run reports Failure
        "Failure",
    ]
    for run_id in (zeta_run, ops_run):
        main.stop(run_id)
        main.wait_ended(run_id)


# ----- remaining runtime ---------------------------------------------------------------------


def test_used_runtime_counts_running_runs_and_not_queued_ones(main: V3Daemon) -> None:
    key = main.keys["meter"]
    assert main.remaining(key) == {"used": 0, "allowance": 500, "remaining": 500}
    running = link_run_id(main.ok("trigger", key, name="meter-sleep"))
    assert main.ok("trigger", key, name="meter-sleep") == QUEUED
    assert main.ok("trigger", key, name="meter-sleep") == QUEUED
    waiting = [run["id"] for run in main.account_runs("meter-sleep", "meter", "pending")]
    assert len(waiting) == 2
    until(lambda: main.run(running)["status"] == "running")
    start_at = parse_time(main.run(running)["start_at"])

    # Wait ~3 s of running time, reading sparingly: every call counts against the key's budget.
    poll(lambda: (datetime.now(UTC) - start_at).total_seconds() >= 3, 10, 0.2)
    spent = main.remaining(key)
    elapsed = (datetime.now(UTC) - start_at).total_seconds() / 60
    # One running run counts up to now; the two queued ones count nothing.
    assert 0.03 <= spent["used"] <= elapsed + 0.01, (spent, elapsed)
    assert spent["remaining"] == pytest.approx(500 - spent["used"], abs=0.0101)
    # ... and it keeps growing while the run runs.
    poll(lambda: main.remaining(key)["used"] > spent["used"], 10, 0.3)

    for run_id in waiting:  # stopped while still queued: they never start
        main.stop(run_id)
    main.stop(running)
    ended = main.wait_ended(running)
    assert all(main.wait_ended(run_id).get("start_at") is None for run_id in waiting)
    ran = (parse_time(ended["end_at"]) - parse_time(ended["start_at"])).total_seconds() / 60
    final = main.remaining(key)
    assert final["used"] == pytest.approx(ran, abs=0.0051)
    assert final["remaining"] == pytest.approx(500 - final["used"], abs=0.0101)


def test_an_account_without_allowance_reports_numbers(main: V3Daemon) -> None:
    runs = [run for task in ("zeta-quick", "zeta-sleep") for run in main.account_runs(task, "zeta")]
    ended_runs = [main.wait_ended(run["id"]) for run in runs]
    spent = main.remaining(main.keys["zeta"])
    # No allowance is reported as a very large number, never null, so clients can compare.
    assert spent["allowance"] == UNLIMITED_MINUTES
    assert type(spent["allowance"]) is int
    assert isinstance(spent["used"], int | float) and isinstance(spent["remaining"], int | float)
    # Used is still counted for it: the runtime of zeta's runs in this daemon (all ended).
    ran = sum(
        (parse_time(ended["end_at"]) - parse_time(ended["start_at"])).total_seconds() / 60
        for ended in ended_runs
        if ended.get("start_at")
    )
    assert spent["used"] == pytest.approx(ran, abs=0.0051), runs
    assert spent["remaining"] == pytest.approx(UNLIMITED_MINUTES - spent["used"], abs=0.0101)


# ----- quota -----------------------------------------------------------------------------------


def test_quota_exceeded_for_one_account_only(quota: V3Daemon) -> None:
    acme, zeta = quota.keys["acme"], quota.keys["zeta"]
    assert quota.remaining(acme) == {"used": 0, "allowance": 0.02, "remaining": 0.02}
    work = link_run_id(quota.ok("trigger", acme, name="acme-work"))

    # A running run counts up to now: the allowance runs out while it still runs. (Wait
    # for used >= 0.03: shown with two decimals, 0.02 may still be 0.0195 really.)
    poll(lambda: quota.remaining(acme)["used"] >= 0.03, 15, 0.2)
    assert quota.remaining(acme)["remaining"] == 0
    assert quota.ok("run-data", acme, name="acme-work")["status"] == "Running"
    for name in ("acme-instant", "acme-work"):
        refused = quota.call("trigger", acme, name=name)
        assert (refused.status_code, refused.json()) == (403, QUOTA_EXCEEDED), name
    assert quota.runs("acme-instant") == []
    assert len(quota.runs("acme-work")) == 1
    # Visibility comes first: another account's name is still not found.
    hidden = quota.call("trigger", acme, name="zeta-work")
    assert hidden.status_code == 404 and hidden.json()["message"] == TASK_NOT_FOUND

    # zeta has no allowance: it still triggers.
    zeta_run = link_run_id(quota.ok("trigger", zeta, name="zeta-work"))
    assert quota.wait_ended(zeta_run)["end_reason"] == "success"

    assert quota.wait_ended(work)["end_reason"] == "success"
    spent = quota.remaining(acme)
    assert spent["allowance"] == 0.02 and spent["remaining"] == 0
    assert spent["used"] == pytest.approx(4 / 60, abs=0.02)
    refused = quota.call("trigger", acme, name="acme-instant")
    assert (refused.status_code, refused.json()) == (403, QUOTA_EXCEEDED)
    # Reading the account's state is not refused for quota.
    assert quota.ok("run-data", acme, name="acme-work")["status"] == "Success"
    assert quota.ok("list-automations", acme)["data"]["names"] == ["acme-instant", "acme-work"]

    # One quota_exhausted notification per task; the later refusal is folded.
    listed = quota.rest("GET", "/api/notifications")
    assert sorted(
        (n["kind"], n["task_name"], n["status"], n["count"]) for n in listed["notifications"]
    ) == [
        ("quota_exhausted", "acme-instant", "delivered", 1),
        ("quota_exhausted", "acme-work", "delivered", 1),
    ]


# ----- keys --------------------------------------------------------------------------------------


def test_a_revoked_key_is_refused_at_once(main: V3Daemon) -> None:
    key, key_id = main.new_key("zeta")
    assert main.ok("list-automations", key)["status"] == "success"
    revoked = run_cli("--config", str(main.config), "keys", "revoke", key_id, env=main.env)
    assert revoked.returncode == 0, revoked.stderr
    for endpoint in ENDPOINTS:
        answer = main.call(endpoint, key, name="zeta-quick")
        assert (answer.status_code, answer.json()) == (401, INVALID_KEY), endpoint
    # Only that key: another key of the same account still works.
    assert main.ok("list-automations", main.keys["zeta-kept"])["status"] == "success"


@pytest.mark.parametrize(
    "key",
    [None, "", "ryk_not-a-key-runyard-ever-made", 12345],
    ids=["missing", "empty", "unknown", "not-a-string"],
)
def test_calls_without_a_valid_key_are_refused(main: V3Daemon, key: Any) -> None:
    for endpoint in ENDPOINTS:
        body = {"name": "zeta-quick"} if key is None else {"key": key, "name": "zeta-quick"}
        answer = main.client.post(f"{main.url}/api/v3/{endpoint}", json=body)
        assert (answer.status_code, answer.json()) == (401, INVALID_KEY), endpoint


# ----- reload -------------------------------------------------------------------------------


def test_raising_the_account_limit_by_reload_starts_queued_runs(tmp_path: Path) -> None:
    with serve(tmp_path, RELOAD_CONFIG, [("acme", "acme")]) as daemon:
        acme = daemon.keys["acme"]
        first = link_run_id(daemon.ok("trigger", acme, name="acme-sleep"))
        assert daemon.ok("trigger", acme, name="acme-sleep") == QUEUED
        [waiting] = [run["id"] for run in daemon.account_runs("acme-sleep", "acme", "pending")]

        text = daemon.config.read_text(encoding="utf-8")
        daemon.config.write_text(
            text.replace("max_concurrent_runs = 1", "max_concurrent_runs = 2"), encoding="utf-8"
        )
        reloaded = daemon.rest("POST", "/api/daemon/reload")
        assert reloaded["accounts_changed"] == ["acme"]
        # A slot is free now: the queued run starts without waiting for another run to end.
        try:
            until(lambda: daemon.run(waiting)["status"] == "running", timeout=5)
        finally:
            for run_id in (first, waiting):
                daemon.stop(run_id)
            for run_id in (first, waiting):
                daemon.wait_ended(run_id)
        assert daemon.run(first)["end_reason"] == "stopped"
