"""Every refusal of the v3 API: exact message and HTTP status, on every endpoint it applies to.

The error table of `reference/v3-api-facts.md` is the contract. A refused
trigger must create no run, and no request may ever get a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from v3_fixtures import (
    ALL_ENDPOINTS,
    INVALID_KEY,
    KEYED_BODIES,
    LINK_KEY,
    MISSING_NAME,
    QUOTA_EXCEEDED,
    RATE_LIMITED,
    SHAPE_MESSAGE,
    TASK_NOT_FOUND,
    V3Daemon,
    key_id,
    link_query,
    run_id_of,
    v3_daemon,
)

CONFIG = """
[accounts.default]
max_concurrent_runs = 2
rate_limit_per_minute = 100000

[accounts.reader]
tasks = ["quick"]
rate_limit_per_minute = 100000

[accounts.broke]
runtime_allowance_minutes = 0
rate_limit_per_minute = 100000

[accounts.tiny]
runtime_allowance_minutes = 0.01
tasks = ["nap"]
rate_limit_per_minute = 100000

[accounts.limited]
rate_limit_per_minute = 3

[tasks.first]
automation = "My First Automation"
run = 'true'
max_concurrent = 10

[tasks.quick]
automation = "Quick"
run = 'true'
max_concurrent = 10

[tasks.idle]
automation = "Never run"
run = 'true'

[tasks.nap]
automation = "Nap"
run = 'sleep 1'
"""

KEYS = {
    "default": "default",
    "revoked": "default",
    "reader": "reader",
    "broke": "broke",
    "tiny": "tiny",
    "limited": "limited",
    "limited-spare": "limited",
}
READER_RUNS = 7  # runs of the `reader` account, for the `count` rows
CELL_MESSAGE = "Data cells must be strings, numbers, booleans or null"
BODY_OBJECT = "The request body must be a JSON object."
MIB = 1024 * 1024
SMALL_CAP = 64 * 1024

ABSENT = object()  # a field left out of the body


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V3Daemon]:
    with v3_daemon(tmp_path_factory.mktemp("v3-errors"), CONFIG, KEYS) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def small_cap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V3Daemon]:
    directory = tmp_path_factory.mktemp("v3-small-cap")
    keys = {"default": "default"}
    with v3_daemon(directory, CONFIG, keys, 'max_request_size = "64kb"') as daemon:
        yield daemon


@pytest.fixture(scope="module")
def revoked_key(api: V3Daemon) -> str:
    """Return a key that worked on the running daemon and was then revoked with the CLI."""
    key = api.keys["revoked"]
    assert api.call("list-automations", {"key": key})[0] == 200
    result = api.cli("keys", "revoke", key_id(api, "revoked"))
    assert result.returncode == 0, result.stderr
    return key


@pytest.fixture(scope="module")
def reader_history(api: V3Daemon) -> int:
    """Give the `reader` account READER_RUNS ended runs; return how many."""
    for run_id in [api.trigger(api.keys["reader"], "Quick") for _ in range(READER_RUNS)]:
        api.wait_ended(run_id)
    return READER_RUNS


def with_field(body: dict[str, Any], name: str, value: object) -> dict[str, Any]:
    """Return `body` with the field set, or removed when `value` is ABSENT."""
    changed = {k: v for k, v in body.items() if k != name}
    if value is not ABSENT:
        changed[name] = value
    return changed


def keyed(daemon: V3Daemon, endpoint: str, account: str = "default") -> dict[str, Any]:
    return {"key": daemon.keys[account], **KEYED_BODIES[endpoint]}


def valid_body(daemon: V3Daemon, endpoint: str) -> dict[str, Any]:
    if endpoint == "stop":
        return {"pid": "00", "pw": "not-a-viewer-password-of-any-run"}
    return keyed(daemon, endpoint)


def assert_error(answer: tuple[int, Any], status: int, message: str) -> None:
    assert answer == (status, {"status": "error", "message": message})


def assert_no_new_run(daemon: V3Daemon, before: int) -> None:
    assert daemon.runs_total() == before, "a refused request created a run"


# ----- Invalid key (401) -----------------------------------------------------------------

BAD_KEYS = {
    "missing": lambda keys, revoked: ABSENT,
    "null": lambda keys, revoked: None,
    "empty": lambda keys, revoked: "",
    "wrong": lambda keys, revoked: "ryk_" + "A" * 43,
    "wrong-case": lambda keys, revoked: keys["default"].swapcase(),
    "with-space": lambda keys, revoked: keys["default"] + " ",
    "revoked": lambda keys, revoked: revoked,
    "number": lambda keys, revoked: 12345,
    "boolean": lambda keys, revoked: True,
    "array": lambda keys, revoked: [keys["default"]],
    "object": lambda keys, revoked: {"key": keys["default"]},
}


@pytest.mark.parametrize("endpoint", list(KEYED_BODIES))
@pytest.mark.parametrize("kind", list(BAD_KEYS))
def test_invalid_key(api: V3Daemon, revoked_key: str, endpoint: str, kind: str) -> None:
    body = with_field(keyed(api, endpoint), "key", BAD_KEYS[kind](api.keys, revoked_key))
    before = api.runs_total()

    assert_error(api.call(endpoint, body), 401, INVALID_KEY)
    assert_no_new_run(api, before)


@pytest.mark.parametrize("endpoint", list(KEYED_BODIES))
def test_wrong_bearer_header_is_an_invalid_key(
    api: V3Daemon, revoked_key: str, endpoint: str
) -> None:
    for header in (f"Bearer {revoked_key}", "Bearer ryk_nope", "Basic dXNlcjpwdw==", "Bearer"):
        response = api.post(endpoint, KEYED_BODIES[endpoint], headers={"Authorization": header})
        assert (response.status_code, response.json()) == (
            401,
            {"status": "error", "message": INVALID_KEY},
        ), header


# ----- Task not found (404) and Missing task name (400) ---------------------------------


@pytest.mark.parametrize("endpoint", ["trigger", "run-data"])
@pytest.mark.parametrize(
    ("account", "name"),
    [
        ("default", "Nope"),
        ("default", "my first automation"),
        ("default", "My First Automation "),
        ("default", "My  First Automation"),
        ("default", "first"),  # the task's own name is not its automation name
        ("default", "   "),
        ("reader", "My First Automation"),  # exists, but not for this account
    ],
)
def test_task_not_found(api: V3Daemon, endpoint: str, account: str, name: str) -> None:
    before = api.runs_total()

    assert_error(api.call(endpoint, {"key": api.keys[account], "name": name}), 404, TASK_NOT_FOUND)
    assert_no_new_run(api, before)


@pytest.mark.parametrize("endpoint", ["trigger", "run-data"])
@pytest.mark.parametrize("name", [ABSENT, None, ""], ids=["absent", "null", "empty"])
def test_missing_task_name(api: V3Daemon, endpoint: str, name: object) -> None:
    before = api.runs_total()
    body = with_field(keyed(api, endpoint), "name", name)

    assert_error(api.call(endpoint, body), 400, MISSING_NAME)
    assert_no_new_run(api, before)


@pytest.mark.parametrize("endpoint", ["trigger", "run-data"])
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (42, "a number"),
        (0, "a number"),
        (1.5, "a number"),
        (["My First Automation"], "an array"),
        ({"name": "My First Automation"}, "an object"),
        (True, "a boolean"),
        (False, "a boolean"),
    ],
)
def test_name_of_the_wrong_type(api: V3Daemon, endpoint: str, name: object, kind: str) -> None:
    before = api.runs_total()
    body = with_field(keyed(api, endpoint), "name", name)

    assert_error(api.call(endpoint, body), 400, f"name must be a string, got {kind}.")
    assert_no_new_run(api, before)


def test_run_data_of_an_automation_without_runs(api: V3Daemon) -> None:
    # Not in the error table: an error body with a 4xx, never a 500 or an empty success.
    status, answer = api.call("run-data", {"key": api.keys["default"], "name": "Never run"})

    assert status == 404, answer
    assert answer["status"] == "error" and answer["message"], answer


# ----- Quota exceeded (403) --------------------------------------------------------------


def test_quota_exceeded_refuses_the_trigger(api: V3Daemon) -> None:
    before = api.runs_total()

    assert_error(
        api.call("trigger", {"key": api.keys["broke"], "name": "My First Automation"}),
        403,
        QUOTA_EXCEEDED,
    )
    assert_no_new_run(api, before)


def test_quota_used_up_by_a_run(api: V3Daemon) -> None:
    # 0.01 minutes is 0.6 s: one run of a second uses it all.
    key = api.keys["tiny"]
    api.wait_ended(api.trigger(key, "Nap"))
    before = api.runs_total()

    assert_error(api.call("trigger", {"key": key, "name": "Nap"}), 403, QUOTA_EXCEEDED)
    assert_no_new_run(api, before)
    status, answer = api.call("remaining-runtime", {"key": key})
    assert status == 200 and answer["status"] == "success", answer
    assert answer["data"]["allowance"] == 0.01, answer
    assert answer["data"]["used"] >= 0.01, answer
    assert answer["data"]["remaining"] == 0, answer


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        (
            "remaining-runtime",
            {},
            {"status": "success", "data": {"used": 0, "allowance": 0, "remaining": 0}},
        ),
        ("run-reports", {}, {"status": "success", "data": {"reports": []}}),
        ("list-automations", {}, None),
    ],
)
def test_quota_exceeded_account_can_still_read(
    api: V3Daemon, endpoint: str, body: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    status, answer = api.call(endpoint, {"key": api.keys["broke"], **body})

    assert status == 200, answer
    if expected is not None:
        assert answer == expected
    else:
        assert answer["status"] == "success", answer


# ----- Rate limit exceeded (429) ---------------------------------------------------------


@pytest.fixture(scope="module")
def exhausted_key(api: V3Daemon) -> str:
    """Return the `limited` key after its three calls of the minute, on three endpoints."""
    key = api.keys["limited"]
    for endpoint in ("list-automations", "remaining-runtime", "run-reports"):
        status, answer = api.call(endpoint, {"key": key})
        assert status == 200, (endpoint, answer)
    return key


@pytest.mark.parametrize("endpoint", list(KEYED_BODIES))
def test_rate_limit_exceeded(api: V3Daemon, exhausted_key: str, endpoint: str) -> None:
    before = api.runs_total()
    body = {**KEYED_BODIES[endpoint], "key": exhausted_key}

    assert_error(api.call(endpoint, body), 429, RATE_LIMITED)
    assert_no_new_run(api, before)


def test_rate_limit_is_per_key(api: V3Daemon, exhausted_key: str) -> None:
    status, answer = api.call("list-automations", {"key": api.keys["limited-spare"]})

    assert status == 200, answer
    assert api.call("list-automations", {"key": exhausted_key})[0] == 429


# ----- malformed bodies (400) -----------------------------------------------------------


def _malformed(body: dict[str, Any], kind: str) -> bytes:
    text = json.dumps(body)
    if kind == "truncated":
        return text[: len(text) // 2].encode()
    if kind == "trailing-garbage":
        return (text + " garbage").encode()
    if kind == "two-objects":
        return (text + text).encode()
    if kind == "not-utf-8":
        return text[:-1].encode() + b', "extra": "caf\xe9"}'
    if kind == "single-quotes":
        return text.replace('"', "'").encode()
    if kind == "trailing-comma":
        return (text[:-1] + ",}").encode()
    assert kind == "empty"
    return b""


MALFORMED = [
    "truncated",
    "trailing-garbage",
    "two-objects",
    "not-utf-8",
    "single-quotes",
    "trailing-comma",
    "empty",
]


@pytest.mark.parametrize("endpoint", ALL_ENDPOINTS)
@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_json(api: V3Daemon, endpoint: str, kind: str) -> None:
    before = api.runs_total()
    response = api.post(endpoint, content=_malformed(valid_body(api, endpoint), kind))

    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert set(answer) == {"status", "message"} and answer["status"] == "error", answer
    assert "JSON" in answer["message"], answer
    assert_no_new_run(api, before)


@pytest.mark.parametrize("endpoint", ALL_ENDPOINTS)
@pytest.mark.parametrize("raw", ["[]", '["key", "name"]', '"a string"', "42", "null", "true"])
def test_body_that_is_not_an_object(api: V3Daemon, endpoint: str, raw: str) -> None:
    before = api.runs_total()
    response = api.post(endpoint, content=raw.encode())

    assert (response.status_code, response.json()) == (
        400,
        {"status": "error", "message": BODY_OBJECT},
    )
    assert_no_new_run(api, before)


@pytest.mark.parametrize("endpoint", [*ALL_ENDPOINTS, "rest-trigger"])
@pytest.mark.parametrize("kind", ["huge-number", "deep-nesting"])
def test_json_python_cannot_hold_is_never_a_500(api: V3Daemon, endpoint: str, kind: str) -> None:
    # Valid JSON by the grammar, but a 5,000-digit integer or 100,000 levels of
    # nesting (200 kB) is more than a naive json.loads takes without raising. Which
    # answer is right is open (a refusal, or a 5,000-digit string cell); a 500 is not.
    value = "1" * 5000 if kind == "huge-number" else "[" * 100_000 + "]" * 100_000
    before = api.runs_total()
    if endpoint == "rest-trigger":
        raw = f'{{"data": [[{value}]]}}'.encode()
        response = api.rest("POST", "/api/tasks/first/run", content=raw)
    else:
        field = "data" if endpoint == "trigger" else "extra"
        text = json.dumps(valid_body(api, endpoint))
        raw = f'{text[:-1]}, "{field}": [[{value}]]}}'.encode()
        response = api.post(endpoint, content=raw)

    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code >= 400 and endpoint != "rest-trigger":
        assert set(answer) == {"status", "message"} and answer["status"] == "error", answer
    if response.status_code >= 400:
        assert_no_new_run(api, before)
    elif "trigger" in endpoint:
        run_id = answer["id"] if endpoint == "rest-trigger" else run_id_of(answer[LINK_KEY])
        api.wait_ended(run_id)


# ----- count (run-reports) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (ABSENT, 5),
        (None, 5),  # null means the default
        (2, 2),
        (READER_RUNS, READER_RUNS),
        (10, READER_RUNS),
        (10.0, READER_RUNS),
        ("10", READER_RUNS),  # digits in a string are read as the number
        ("3", 3),
        (10**9, READER_RUNS),  # capped (MAX_REPORTS), not refused
    ],
)
def test_count_accepted(api: V3Daemon, reader_history: int, count: object, expected: int) -> None:
    body = with_field({"key": api.keys["reader"]}, "count", count)
    status, answer = api.call("run-reports", body)

    assert status == 200, answer
    assert answer["status"] == "success", answer
    reports = answer["data"]["reports"]
    assert len(reports) == expected, reports
    assert {report["task_name"] for report in reports} == {"Quick"}


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        ("ten", '"ten"'),
        ("", '""'),
        ("-1", '"-1"'),
        ("2.5", '"2.5"'),
        (0, "0"),
        (-1, "-1"),
        (2.5, "2.5"),
        (True, "true"),
        (False, "false"),
        ([5], "an array"),
        ({"n": 5}, "an object"),
    ],
)
def test_count_refused(api: V3Daemon, reader_history: int, count: object, shown: str) -> None:
    body = {"key": api.keys["reader"], "count": count}

    assert_error(
        api.call("run-reports", body),
        400,
        f"count must be a whole number of at least 1, got {shown}.",
    )


# ----- data (trigger) ---------------------------------------------------------------------


def _cell(table: int, row: int, column: int, kind: str) -> str:
    return f"{CELL_MESSAGE}: table {table}, row {row}, column {column} holds {kind}."


BAD_DATA = {
    "string": ("a string", SHAPE_MESSAGE),
    "object": ({"url": ["https://example.com"]}, SHAPE_MESSAGE),
    "number": (42, SHAPE_MESSAGE),
    "boolean": (True, SHAPE_MESSAGE),
    "1-D-numbers": ([1, 2], SHAPE_MESSAGE),
    "1-D-strings": (["url", "https://example.com"], SHAPE_MESSAGE),
    "row-not-an-array": ([["a"], "b"], SHAPE_MESSAGE),
    "row-null": ([["a"], None], SHAPE_MESSAGE),
    "mixed-depth": ([["a"], [["b"]]], SHAPE_MESSAGE),
    "cell-object": ([[{"x": 1}]], _cell(1, 1, 1, "an object")),
    "cell-object-later": ([["a", "b"], ["c", {"d": 1}]], _cell(1, 2, 2, "an object")),
    "3-D-row-not-an-array": ([[["a"]], ["b"]], SHAPE_MESSAGE),
    "3-D-table-not-an-array": ([[["a"]], "b"], SHAPE_MESSAGE),
    "3-D-cell-object": ([[["a"]], [["b", {"c": 1}]]], _cell(2, 1, 2, "an object")),
    "4-D": ([[[["a"]]]], _cell(1, 1, 1, "an array")),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_data_of_the_wrong_shape(api: V3Daemon, case: str) -> None:
    data, message = BAD_DATA[case]
    before = api.runs_total()
    body = {"key": api.keys["default"], "name": "My First Automation", "data": data}

    assert_error(api.call("trigger", body), 400, message)
    assert_no_new_run(api, before)


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_rest_trigger_refuses_the_same_data(api: V3Daemon, case: str) -> None:
    data, message = BAD_DATA[case]
    before = api.runs_total()
    response = api.rest("POST", "/api/tasks/first/run", content=json.dumps({"data": data}).encode())

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 422, problem
    assert problem["errors"] == [{"location": "body.data", "message": message, "value": data}]
    assert "body.data" in problem["detail"], problem
    assert_no_new_run(api, before)


@pytest.mark.parametrize(
    ("data", "tables"),
    [
        (
            [["url"], ["https://example.com/product/1"]],
            [[["url"], ["https://example.com/product/1"]]],
        ),
        ([[1, True, None]], [[["1", "true", ""]]]),
        ([[["a"]], [["b"], ["c"]]], [[["a"]], [["b"], ["c"]]]),
    ],
)
def test_rest_trigger_accepts_v3_data(
    api: V3Daemon, data: list[Any], tables: list[list[list[str]]]
) -> None:
    response = api.rest("POST", "/api/tasks/first/run", content=json.dumps({"data": data}).encode())

    assert response.status_code == 201, response.text
    run = api.wait_ended(response.json()["id"])
    assert run["input_data"] == tables, run
    assert run["triggered_by"] == "api", run


# ----- unknown fields ----------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", list(KEYED_BODIES))
def test_unknown_fields_are_ignored(api: V3Daemon, endpoint: str) -> None:
    extra = {
        "callback": {"url": "https://example.com/hook"},
        "priority": 5,
        "KEY": "not-the-key",
        "Name": "Nope",
        "tags": ["a", None],
    }
    body = {**keyed(api, endpoint), **extra}
    if endpoint == "trigger":
        body["data"] = [["url"], ["https://example.com"]]
    status, answer = api.call(endpoint, body)

    assert status == 200, answer
    if endpoint == "trigger":
        assert list(answer) == [LINK_KEY], answer
        api.wait_ended(run_id_of(answer[LINK_KEY]))
    elif endpoint != "run-data":
        assert answer["status"] == "success", answer


# ----- /stop -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stop_link(api: V3Daemon) -> dict[str, str]:
    """Return the viewer link query of an ended run."""
    status, answer = api.call(
        "trigger", {"key": api.keys["default"], "name": "My First Automation"}
    )
    assert status == 200, answer
    api.wait_ended(run_id_of(answer[LINK_KEY]))
    return link_query(answer[LINK_KEY])


def _other_pid(pid: str) -> str:
    return f"{(int(pid) + 1) % 100:02d}"


STOP_BODIES = {
    "wrong-password": lambda pid, pw: {"pid": pid, "pw": "x" * 32},
    "no-password": lambda pid, pw: {"pid": pid},
    "null-password": lambda pid, pw: {"pid": pid, "pw": None},
    "number-password": lambda pid, pw: {"pid": pid, "pw": 12345},
    "empty-password": lambda pid, pw: {"pid": pid, "pw": ""},
    "other-pid": lambda pid, pw: {"pid": _other_pid(pid), "pw": pw},
    "no-pid": lambda pid, pw: {"pw": pw},
    "object-pid": lambda pid, pw: {"pid": {"pid": pid}, "pw": pw},
    "empty": lambda pid, pw: {},
}


@pytest.mark.parametrize("case", list(STOP_BODIES))
def test_stop_without_the_run_secret(api: V3Daemon, stop_link: dict[str, str], case: str) -> None:
    pid = stop_link["host"].split("-")[1][2:4]
    status, answer = api.call("stop", STOP_BODIES[case](pid, stop_link["password"]))

    assert status == 404, answer
    assert set(answer) == {"status", "message"} and answer["status"] == "error", answer


# ----- request size (413) ----------------------------------------------------------------


def _sized_body(size: int, key: str, rest: bool) -> bytes:
    """Return a valid trigger body of exactly `size` bytes (v3 or REST)."""
    head = {"data": [["x"]]} if rest else {"key": key, "name": "Quick", "data": [["x"]]}
    base = json.dumps(head).encode()
    assert size >= len(base)
    filler = "x" * (size - len(base) + 1)
    head["data"] = [[filler]]
    body = json.dumps(head).encode()
    assert len(body) == size
    return body


def _chunks(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


def _send(daemon: V3Daemon, rest: bool, body: bytes, chunked: bool) -> Any:
    content: bytes | Iterator[bytes] = _chunks(body) if chunked else body
    if rest:
        return daemon.rest("POST", "/api/tasks/quick/run", content=content)
    return daemon.post("trigger", content=content)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("rest", [False, True], ids=["v3", "rest"])
@pytest.mark.parametrize(
    ("size", "accepted"),
    [(SMALL_CAP - 1000, True), (SMALL_CAP, True), (SMALL_CAP + 1, False), (2 * SMALL_CAP, False)],
    ids=["under", "at-cap", "one-over", "double"],
)
def test_request_size_cap(
    small_cap: V3Daemon, size: int, accepted: bool, rest: bool, chunked: bool
) -> None:
    before = small_cap.runs_total()
    response = _send(small_cap, rest, _sized_body(size, small_cap.keys["default"], rest), chunked)

    if accepted:
        assert response.status_code == (201 if rest else 200), response.text
        run_id = response.json()["id"] if rest else run_id_of(response.json()[LINK_KEY])
        run = small_cap.wait_ended(run_id)
        assert len(run["input_data"][0][0][0]) > size - 200
        return
    assert response.status_code == 413, response.text
    _assert_too_large(response, rest, "64 KiB")
    assert_no_new_run(small_cap, before)


def _assert_too_large(response: Any, rest: bool, limit: str) -> None:
    body = response.json()
    if rest:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert body["status"] == 413, body
        assert limit in body["detail"], body
    else:
        assert response.headers["content-type"].startswith("application/json")
        assert set(body) == {"status", "message"} and body["status"] == "error", body
        assert limit in body["message"], body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("rest", [False, True], ids=["v3", "rest"])
def test_twenty_mib_body_against_the_default_cap(api: V3Daemon, rest: bool, chunked: bool) -> None:
    before = api.runs_total()
    response = _send(api, rest, _sized_body(20 * MIB, api.keys["default"], rest), chunked)

    assert response.status_code == 413, response.text[:300]
    _assert_too_large(response, rest, "10 MiB")
    assert_no_new_run(api, before)
    # The daemon goes on answering.
    assert api.http.get(f"{api.url}/health").status_code == 200
    assert api.call("list-automations", {"key": api.keys["default"]})[0] == 200
