"""The v3 API as its public clients use it: every example of the spec pages, sent verbatim.

One daemon serves the whole module. Each concern gets its own account, so the
runs of one test never show up in another's reports: `default` (the spec's
examples), `queue` (one run at a time, for queueing), `reports` (ordering) and
`lister` (a subset of the tasks).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from v3_fixtures import (
    GATE_SCRIPT,
    LINK_KEY,
    PASSWORD_RE,
    QUEUED_BODY,
    REPORT_FIELDS,
    REPORT_STATUSES,
    TASK_NOT_FOUND,
    TIMESTAMP_RE,
    VIEWER_HOST_RE,
    V3Daemon,
    link_query,
    poll,
    run_id_of,
    v3_daemon,
)

CONFIG = f"""
[accounts.default]
max_concurrent_runs = 2
runtime_allowance_minutes = 15000
rate_limit_per_minute = 100000

[accounts.queue]
max_concurrent_runs = 1
tasks = ["first", "gate"]
rate_limit_per_minute = 100000

[accounts.reports]
tasks = ["report-*"]
rate_limit_per_minute = 100000

[accounts.lister]
tasks = ["report-*", "spaced"]
rate_limit_per_minute = 100000

[tasks.first]
automation = "My First Automation"
run = 'sleep 0.2'
max_concurrent = 10

[tasks.scrape]
automation = "Scrape product page"
run = 'cp "$RUNYARD_INPUT_CSV" "$RUNYARD_OUTPUT_DIR/echo.csv"'
max_concurrent = 10

[tasks.tables]
automation = "Echo tables"
run = '"{{python}}" "{{worker}}" tables'

[tasks.files]
automation = "Write files"
run = '"{{python}}" "{{worker}}" files'

[tasks.failing]
automation = "Failing automation"
run = 'echo "first complaint" >&2; echo "disk on fire" >&2; exit 3'

[tasks.long]
automation = "Long automation"
run = 'echo started; sleep 30'

[tasks.spaced]
automation = "My  Automation"
run = 'true'

[tasks.gate]
automation = "Gate"
run = '{GATE_SCRIPT}'
max_concurrent = 10
timeout = "60s"

[tasks.report-a]
automation = "Report A"
run = 'true'
max_concurrent = 10

[tasks.report-b]
automation = "Report B"
run = 'true'
max_concurrent = 10

[tasks.report-c]
automation = "Report C"
run = 'true'
max_concurrent = 10
"""

ALL_NAMES = [
    "Echo tables",
    "Failing automation",
    "Gate",
    "Long automation",
    "My  Automation",
    "My First Automation",
    "Report A",
    "Report B",
    "Report C",
    "Scrape product page",
    "Write files",
]

# The request bodies of the spec pages, verbatim but for the key.
SPEC_TRIGGER_BODIES = {
    "My First Automation": {"name": "My First Automation"},
    "Scrape product page": {
        "name": "Scrape product page",
        "data": [
            ["url"],
            ["https://example.com/product/1"],
            ["https://example.com/product/2"],
        ],
    },
}


@pytest.fixture(scope="module")
def compat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V3Daemon]:
    keys = {"default": "default", "queue": "queue", "reports": "reports", "lister": "lister"}
    with v3_daemon(tmp_path_factory.mktemp("v3-compat"), CONFIG, keys) as daemon:
        yield daemon


# ----- helpers ------------------------------------------------------------------------


def reports(daemon: V3Daemon, account: str, count: int | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"key": daemon.keys[account]}
    if count is not None:
        body["count"] = count
    status, answer = daemon.call("run-reports", body)
    assert status == 200, answer
    assert set(answer) == {"status", "data"} and answer["status"] == "success", answer
    assert set(answer["data"]) == {"reports"}, answer
    found: list[dict[str, Any]] = answer["data"]["reports"]
    return found


def latest_report(daemon: V3Daemon, account: str, name: str) -> dict[str, Any] | None:
    return next((r for r in reports(daemon, account, 50) if r["task_name"] == name), None)


def run_data(daemon: V3Daemon, account: str, name: str) -> dict[str, Any]:
    status, answer = daemon.call("run-data", {"key": daemon.keys[account], "name": name})
    assert status == 200, answer
    assert set(answer) == {"status", "data"}, answer
    assert answer["status"] in REPORT_STATUSES, answer
    assert isinstance(answer["data"], dict), answer
    for token, rows in answer["data"].items():
        assert isinstance(token, str)
        assert all(isinstance(row, list) for row in rows), answer
        assert all(isinstance(cell, str) for row in rows for cell in row), answer
    return answer


def finished_data(daemon: V3Daemon, account: str, name: str) -> dict[str, Any]:
    """Poll /run-data until the newest run of `name` is no longer Running; return the answer."""
    answers: list[dict[str, Any]] = []

    def ended() -> bool:
        answers.append(run_data(daemon, account, name))
        return answers[-1]["status"] != "Running"

    poll(ended)
    return answers[-1]


def assert_report_shape(report: dict[str, Any]) -> None:
    assert set(report) == REPORT_FIELDS, report
    assert isinstance(report["task_name"], str)
    assert report["status"] in REPORT_STATUSES, report
    for field in ("created_at", "updated_at"):
        assert TIMESTAMP_RE.fullmatch(report[field]), report
    assert report["created_at"] <= report["updated_at"], report
    first_line = report["description"].splitlines()[0]
    assert "runyard" in first_line and "remotely triggered" in first_line, report


def wait_account_idle(daemon: V3Daemon, account: str) -> None:
    poll(lambda: all(r["status"] != "Running" for r in reports(daemon, account, 100)))


def at(run: dict[str, Any], field: str) -> datetime:
    """Return a timestamp of a REST run as a datetime (the text may drop zero digits)."""
    return datetime.fromisoformat(run[field])


def release(gate: Path) -> None:
    gate.touch()


# ----- /trigger -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPEC_TRIGGER_BODIES))
def test_trigger_example_answers_a_viewer_link(compat: V3Daemon, name: str) -> None:
    before = compat.runs_total()
    status, answer = compat.call(
        "trigger", {"key": compat.keys["default"], **SPEC_TRIGGER_BODIES[name]}
    )

    assert status == 200, answer
    assert list(answer) == [LINK_KEY], answer  # no `status` key on a started run
    link = answer[LINK_KEY]
    parts = urlsplit(link)
    assert parts.scheme == "http" and parts.netloc == f"127.0.0.1:{compat.port}", link
    run_id = run_id_of(link)
    assert run_id and "/" not in run_id, link
    query = link_query(link)
    assert set(query) == {"host", "port", "password", "taskId"}, link
    assert VIEWER_HOST_RE.fullmatch(query["host"]), link
    assert query["port"] == str(compat.port), link
    assert PASSWORD_RE.fullmatch(query["password"]), link
    assert query["taskId"].isdigit(), link
    assert compat.http.get(link).status_code == 200  # the link opens the run's viewer

    run = compat.wait_ended(run_id)
    assert compat.runs_total() == before + 1
    assert run["triggered_by"] == "cloud" and run["account"] == "default", run
    assert run["end_reason"] == "success", run


def test_each_trigger_gets_its_own_viewer_secret(compat: V3Daemon) -> None:
    links = [
        compat.call("trigger", {"key": compat.keys["default"], "name": "My First Automation"})[1][
            LINK_KEY
        ]
        for _ in range(2)
    ]
    first, second = (link_query(link) for link in links)
    assert run_id_of(links[0]) != run_id_of(links[1])
    assert first["password"] != second["password"]
    assert first["taskId"] == second["taskId"]  # the task's number, stable across its runs
    for link in links:
        compat.wait_ended(run_id_of(link))


@pytest.mark.parametrize(
    ("name", "exists"),
    [
        ("My  Automation", True),
        ("My Automation", False),
        ("my  automation", False),
        ("My  Automation ", False),
        (" My  Automation", False),
        ("MY  AUTOMATION", False),
        ("My\tAutomation", False),
        ("My First Automation", True),
        ("my first automation", False),
        ("My First Automation\n", False),
    ],
)
def test_names_match_exactly(compat: V3Daemon, name: str, exists: bool) -> None:
    before = compat.runs_total()
    status, answer = compat.call("trigger", {"key": compat.keys["default"], "name": name})

    if exists:
        assert status == 200 and list(answer) == [LINK_KEY], answer
        compat.wait_ended(run_id_of(answer[LINK_KEY]))
        assert compat.runs_total() == before + 1
    else:
        assert (status, answer) == (404, {"status": "error", "message": TASK_NOT_FOUND})
        assert compat.runs_total() == before


# ----- /list-automations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "names"),
    [
        ("default", ALL_NAMES),
        ("queue", ["Gate", "My First Automation"]),
        ("reports", ["Report A", "Report B", "Report C"]),
        ("lister", ["My  Automation", "Report A", "Report B", "Report C"]),
    ],
)
def test_list_automations_gives_the_exact_names(
    compat: V3Daemon, account: str, names: list[str]
) -> None:
    status, answer = compat.call("list-automations", {"key": compat.keys[account]})

    assert status == 200, answer
    assert set(answer) == {"status", "data"} and answer["status"] == "success", answer
    assert set(answer["data"]) == {"names"}, answer
    listed = answer["data"]["names"]
    assert sorted(listed) == sorted(names) and len(listed) == len(names), listed


def test_every_listed_name_can_be_passed_to_trigger(compat: V3Daemon) -> None:
    key = compat.keys["lister"]
    for name in compat.call("list-automations", {"key": key})[1]["data"]["names"]:
        run = compat.wait_ended(compat.trigger(key, name))
        assert run["end_reason"] == "success", run


# ----- /run-reports ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_history(compat: V3Daemon) -> list[str]:
    """Trigger seven runs on the `reports` account; return their names in trigger order."""
    names = ["Report A", "Report B", "Report C", "Report A", "Report C", "Report B", "Report A"]
    key = compat.keys["reports"]
    run_ids = [compat.trigger(key, name) for name in names]
    for run_id in run_ids:
        compat.wait_ended(run_id)
    return names


@pytest.mark.parametrize(
    ("body", "expected_count"),
    [
        ({}, 5),  # {"key": ...} alone: the default of five
        ({"count": 10}, 7),  # the spec's payload: every report there is, up to ten
        ({"count": 1}, 1),
        ({"count": 3}, 3),
        ({"count": 7}, 7),
        ({"count": None}, 5),
    ],
)
def test_run_reports_newest_first(
    compat: V3Daemon, report_history: list[str], body: dict[str, Any], expected_count: int
) -> None:
    status, answer = compat.call("run-reports", {"key": compat.keys["reports"], **body})

    assert status == 200, answer
    assert set(answer) == {"status", "data"} and answer["status"] == "success", answer
    assert set(answer["data"]) == {"reports"}, answer
    found = answer["data"]["reports"]
    assert [r["task_name"] for r in found] == report_history[::-1][:expected_count]
    for report in found:
        assert_report_shape(report)
        assert report["status"] == "Success", report
        assert len(report["description"].splitlines()) >= 2, report
    created = [r["created_at"] for r in found]
    assert created == sorted(created, reverse=True)


def test_polling_loop_of_the_run_reports_page(compat: V3Daemon) -> None:
    # The JavaScript loop of v3-run-reports.txt, polling every 0.5 s instead of 10 s.
    key = compat.keys["default"]
    task = "My First Automation"
    status, _ = compat.call("trigger", {"key": key, "name": task})
    assert status == 200
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.5)
        status, answer = compat.call("run-reports", {"key": key})
        assert status == 200, answer
        latest = next((r for r in answer["data"]["reports"] if r["task_name"] == task), None)
        if latest and latest["status"] != "Running":
            break
        assert time.monotonic() < deadline, "the run never finished"

    assert latest["status"] == "Success", latest
    assert_report_shape(latest)
    status, answer = compat.call("run-data", {"key": key, "name": task})
    assert (status, answer) == (200, {"status": "Success", "data": {}})


def test_failed_run_reports_exit_code_and_stderr(compat: V3Daemon) -> None:
    run_id = compat.trigger(compat.keys["default"], "Failing automation")
    compat.wait_ended(run_id)

    report = latest_report(compat, "default", "Failing automation")
    assert report is not None
    assert_report_shape(report)
    assert report["status"] == "Failure", report
    description = report["description"]
    assert "exit code 3" in description, description
    assert "first complaint" in description and "disk on fire" in description, description
    assert run_data(compat, "default", "Failing automation") == {"status": "Failure", "data": {}}


# ----- /run-data --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            SPEC_TRIGGER_BODIES["Scrape product page"]["data"],
            [["url"], ["https://example.com/product/1"], ["https://example.com/product/2"]],
        ),
        (
            [["n", "yes", "no", "none", "half", "big"], [1, True, False, None, 2.5, 1e21]],
            [["n", "yes", "no", "none", "half", "big"], ["1", "true", "false", "", "2.5", "1e+21"]],
        ),
        (
            [["comma, inside", 'say "hi"', "two\nlines", "Zürich ✓"]],
            [["comma, inside", 'say "hi"', "two\nlines", "Zürich ✓"]],
        ),
    ],
    ids=["spec-example", "scalars-coerced", "csv-special-characters"],
)
def test_input_data_reaches_the_process(
    compat: V3Daemon, data: list[list[Any]], expected: list[list[str]]
) -> None:
    run_id = compat.trigger(compat.keys["default"], "Scrape product page", data)

    answer = finished_data(compat, "default", "Scrape product page")
    assert answer == {"status": "Success", "data": {"echo": expected}}
    run = compat.run(run_id)
    assert run["input_data"] == [expected], run
    assert run["output_data"] == {"echo": expected}, run
    assert run["triggered_by"] == "cloud" and run["account"] == "default", run


@pytest.mark.parametrize(
    ("data", "tables"),
    [
        ([["h"], ["a"]], [[["h"], ["a"]]]),
        (
            [[["h1"], ["a"]], [["h2", "h3"], ["b", 7]]],
            [[["h1"], ["a"]], [["h2", "h3"], ["b", "7"]]],
        ),
        (
            [[["only"]], [], [["x"], [None]]],
            [[["only"]], [], [["x"], [""]]],
        ),
    ],
    ids=["2-D-one-table", "3-D-two-tables", "3-D-with-an-empty-table"],
)
def test_three_d_input_gives_several_tables(
    compat: V3Daemon, data: list[Any], tables: list[list[list[str]]]
) -> None:
    run_id = compat.trigger(compat.keys["default"], "Echo tables", data)

    answer = finished_data(compat, "default", "Echo tables")
    expected = {f"table{number}": table for number, table in enumerate(tables, start=1)}
    assert answer == {"status": "Success", "data": expected}
    assert compat.run(run_id)["input_data"] == tables


@pytest.mark.parametrize(
    ("filename", "content", "token", "rows"),
    [
        ("sheet.csv", "a,b\n1,2\n", "sheet", [["a", "b"], ["1", "2"]]),
        ("tabbed.tsv", "x\ty\n1\t2\n", "tabbed", [["x", "y"], ["1", "2"]]),
        ("whole.json", '[["p", "q"], [3, true]]', "whole", [["p", "q"], ["3", "true"]]),
        ("lines.jsonl", '["r", "s"]\n[5, null]\n', "lines", [["r", "s"], ["5", ""]]),
    ],
)
def test_output_formats(
    compat: V3Daemon, filename: str, content: str, token: str, rows: list[list[str]]
) -> None:
    compat.trigger(compat.keys["default"], "Write files", [[filename, content]])

    answer = finished_data(compat, "default", "Write files")
    assert answer == {"status": "Success", "data": {token: rows}}


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("broken.json", "{not json"),
        ("flat.json", '{"a": 1}'),
        ("nested.jsonl", '[{"x": 1}]\n'),
        ("bad token!.csv", "a,b\n"),
        ("notes.txt", "not a table"),
    ],
)
def test_malformed_output_is_a_note_and_the_run_succeeds(
    compat: V3Daemon, filename: str, content: str
) -> None:
    good = ["good.csv", "k,v\n1,2\n"]
    run_id = compat.trigger(compat.keys["default"], "Write files", [good, [filename, content]])

    answer = finished_data(compat, "default", "Write files")
    assert answer == {"status": "Success", "data": {"good": [["k", "v"], ["1", "2"]]}}
    report = latest_report(compat, "default", "Write files")
    assert report is not None and report["status"] == "Success", report
    assert filename in report["description"], report
    assert compat.run(run_id)["end_reason"] == "success"


def test_run_data_is_empty_when_nothing_was_written(compat: V3Daemon) -> None:
    compat.trigger(compat.keys["default"], "My First Automation")

    assert finished_data(compat, "default", "My First Automation") == {
        "status": "Success",
        "data": {},
    }


# ----- /remaining-runtime ---------------------------------------------------------------


def test_remaining_runtime(compat: V3Daemon) -> None:
    status, answer = compat.call("remaining-runtime", {"key": compat.keys["default"]})

    assert status == 200, answer
    assert set(answer) == {"status", "data"} and answer["status"] == "success", answer
    data = answer["data"]
    assert set(data) == {"used", "allowance", "remaining"}, data
    for value in data.values():
        assert isinstance(value, int | float) and not isinstance(value, bool), data
        assert round(value, 2) == value, data  # two decimals at most
    assert data["allowance"] == 15000, data
    assert 0 <= data["used"] < 15000, data
    assert data["remaining"] == round(data["allowance"] - data["used"], 2), data


# ----- queueing -------------------------------------------------------------------------


def test_trigger_over_the_account_limit_is_queued_then_runs(
    compat: V3Daemon, tmp_path: Path
) -> None:
    key = compat.keys["queue"]
    wait_account_idle(compat, "queue")
    gate = tmp_path / "hold"
    holder = compat.trigger(key, "Gate", [[str(gate)]])
    try:
        before = compat.runs_total()
        status, answer = compat.call("trigger", {"key": key, "name": "My First Automation"})

        assert (status, answer) == (200, QUEUED_BODY)
        assert compat.runs_total() == before + 1
        queued = compat.newest_run("first")
        assert queued["status"] == "pending" and queued["account"] == "queue", queued
        assert run_data(compat, "queue", "My First Automation") == {
            "status": "Running",
            "data": {},
        }
        report = reports(compat, "queue")[0]
        assert report["task_name"] == "My First Automation", report
        assert report["status"] == "Running", report
        assert_report_shape(report)
        time.sleep(0.3)  # the slot stays taken: the queued run must not start by itself
        assert compat.run(queued["id"])["status"] == "pending"
    finally:
        release(gate)

    assert finished_data(compat, "queue", "My First Automation") == {
        "status": "Success",
        "data": {},
    }
    ended = compat.run(queued["id"])
    assert at(ended, "start_at") >= at(compat.run(holder), "end_at"), (ended, compat.run(holder))
    assert "queue" in ended["description"].lower(), ended


@pytest.mark.parametrize(
    "order",
    [("Gate", "Gate"), ("Gate", "My First Automation"), ("My First Automation", "Gate")],
)
def test_queued_runs_start_in_trigger_order(
    compat: V3Daemon, tmp_path: Path, order: tuple[str, str]
) -> None:
    key = compat.keys["queue"]
    wait_account_idle(compat, "queue")
    gate = tmp_path / "hold"
    open_gate = tmp_path / "open"
    open_gate.touch()
    tasks = {"Gate": "gate", "My First Automation": "first"}
    holder = compat.trigger(key, "Gate", [[str(gate)]])
    queued: list[str] = []
    try:
        for name in order:
            body: dict[str, Any] = {"key": key, "name": name}
            if name == "Gate":
                body["data"] = [[str(open_gate)]]
            assert compat.call("trigger", body) == (200, QUEUED_BODY)
            queued.append(compat.newest_run(tasks[name])["id"])
        assert [compat.run(run_id)["status"] for run_id in queued] == ["pending", "pending"]
    finally:
        release(gate)

    first, second = (compat.wait_ended(run_id) for run_id in queued)
    held = compat.run(holder)
    assert at(held, "end_at") <= at(first, "start_at") < at(second, "start_at"), (held, first)
    assert at(first, "end_at") <= at(second, "start_at"), (first, second)
    assert first["end_reason"] == second["end_reason"] == "success"


# ----- /stop through the viewer link -------------------------------------------------------


def test_stop_through_the_viewer_link(compat: V3Daemon) -> None:
    status, answer = compat.call(
        "trigger", {"key": compat.keys["default"], "name": "Long automation"}
    )
    assert status == 200, answer
    link = answer[LINK_KEY]
    run_id = run_id_of(link)
    poll(lambda: compat.run(run_id)["status"] == "running")

    # What the public client does: read host and password, pid = host.split("-")[1][2:4].
    query = link_query(link)
    pid = query["host"].split("-")[1][2:4]
    status, stopped = compat.call("stop", {"pid": pid, "pw": query["password"]})

    assert (status, stopped) == (200, {"stopped": pid})
    assert stopped["stopped"]
    ended = compat.wait_ended(run_id, timeout=15)
    assert ended["end_reason"] == "stopped", ended
    assert finished_data(compat, "default", "Long automation")["status"] == "Failure"
    report = latest_report(compat, "default", "Long automation")
    assert report is not None and report["status"] == "Failure", report
    # Stopping a run that has ended is a no-op that still succeeds.
    assert compat.call("stop", {"pid": pid, "pw": query["password"]}) == (200, {"stopped": pid})


# ----- authentication by header -----------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("list-automations", {}),
        ("remaining-runtime", {}),
        ("run-reports", {"count": 1}),
        ("run-data", {"name": "My First Automation"}),
        ("trigger", {"name": "My First Automation"}),
    ],
)
def test_bearer_header_instead_of_body_key(
    compat: V3Daemon, endpoint: str, body: dict[str, Any]
) -> None:
    if endpoint == "run-data":
        compat.trigger(compat.keys["default"], "My First Automation")
    headers = {"Authorization": f"Bearer {compat.keys['default']}"}
    response = compat.post(endpoint, body, headers=headers)

    assert response.status_code == 200, response.text
    answer = response.json()
    if endpoint == "trigger":
        assert list(answer) == [LINK_KEY], answer
        compat.wait_ended(run_id_of(answer[LINK_KEY]))
    elif endpoint == "run-data":
        assert answer["status"] in REPORT_STATUSES, answer
    else:
        assert answer["status"] == "success", answer
