"""One bad request hurts no other: text the store cannot hold, among thousands of good triggers.

Issue 9, item 1: 40 triggers carrying a lone surrogate or NUL in their data
or params, interleaved with 3,000 good ones through the REST and the v3 API
(two accounts), all in flight together against a real daemon. Exactly the 40
are answered 400; the 3,000 are recorded and end; each account's used
runtime is the wall time of its own runs.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from v3_fixtures import V3Daemon, poll, v3_daemon

CONFIG = """
[accounts.alpha]
max_concurrent_runs = 16
rate_limit_per_minute = 1000000

[accounts.beta]
max_concurrent_runs = 16
rate_limit_per_minute = 1000000

[tasks.echo]
run = 'true'
max_concurrent = 32
max_queued = 10000

[[tasks.echo.params]]
name = "note"
env = "NOTE"
default = ""
"""

GOOD_PER_CALLER = 1000  # REST, account alpha, account beta: 3,000 in all
BAD_PER_CALLER = {"rest": 14, "alpha": 13, "beta": 13}  # 40 in all
IN_FLIGHT = 32  # requests open at once, so triggers share the store's commits
SEED = 9
ENDED_TIMEOUT = 180.0

# Written as JSON text: a lone surrogate reaches the daemon only as the escape
# "\udc80", which no JSON encoder writes for a Python str.
BAD_DATA = ('[["ok", "\\udc80"]]', '[["ok"], ["a\\u0000b"]]', '[[["t"]], [["\\ud800"]]]')
BAD_PARAMS = ('{"note": "\\udc80"}', '{"note": "x\\u0000"}')


@dataclass(frozen=True)
class Call:
    caller: str  # "rest", or the v3 account
    body: bytes
    bad: bool


def calls(keys: dict[str, str]) -> list[Call]:
    """Return every request of the test, good and bad, shuffled together."""
    made: list[Call] = []
    for number in range(GOOD_PER_CALLER):
        # Every tenth good trigger carries data too: the rest stay light, so
        # that 3,000 runs fit in tens of seconds on two cores.
        data = f', "data": {json.dumps([["n"], [number]])}' if number % 10 == 0 else ""
        made.append(Call("rest", f'{{"params": {{"note": "{number}"}}{data}}}'.encode(), False))
        for account in ("alpha", "beta"):
            body = f'{{"key": "{keys[account]}", "name": "echo"{data}}}'
            made.append(Call(account, body.encode(), False))
    for caller, count in BAD_PER_CALLER.items():
        for number in range(count):
            if caller == "rest" and number % 2:
                body = f'{{"params": {BAD_PARAMS[number // 2 % len(BAD_PARAMS)]}}}'
            elif caller == "rest":
                body = f'{{"data": {BAD_DATA[number // 2 % len(BAD_DATA)]}}}'
            else:
                data = BAD_DATA[number % len(BAD_DATA)]
                body = f'{{"key": "{keys[caller]}", "name": "echo", "data": {data}}}'
            made.append(Call(caller, body.encode(), True))
    random.Random(SEED).shuffle(made)
    return made


@dataclass(frozen=True)
class Answer:
    status: int  # DROPPED when the connection failed without an answer
    content_type: str
    body: Any


DROPPED = -1


async def send_all(daemon: V3Daemon, made: list[Call]) -> list[Answer]:
    gate = asyncio.Semaphore(IN_FLIGHT)
    rest_headers = {"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/json"}
    v3_headers = {"Content-Type": "application/json"}
    # A connection per request: a kept-alive one can be closed by the server's
    # idle timer just as the next POST goes out on it (on a busy machine), and a
    # trigger must not be sent twice, so it could not be retried.
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=daemon.url, timeout=60.0, limits=limits) as http:

        async def send(call: Call) -> Answer:
            rest = call.caller == "rest"
            async with gate:
                try:
                    response = await http.post(
                        "/api/tasks/echo/run" if rest else "/api/v3/trigger",
                        content=call.body,
                        headers=rest_headers if rest else v3_headers,
                    )
                except httpx.TransportError as error:
                    return Answer(DROPPED, "", repr(error))
            kind = response.headers.get("content-type", "")
            body = response.json() if "json" in kind else response.text
            return Answer(response.status_code, kind, body)

        return await asyncio.gather(*(send(call) for call in made))


def all_runs(daemon: V3Daemon) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    while True:
        response = daemon.rest("GET", f"/api/runs?limit=1000&offset={len(runs)}&sort_direction=asc")
        assert response.status_code == 200, response.text
        page = response.json()["runs"]
        if not page:
            return runs
        runs.extend(page)


def total(daemon: V3Daemon, status: str) -> int:
    response = daemon.rest("GET", f"/api/runs?limit=1&status={status}")
    assert response.status_code == 200, response.text
    count: int = response.json()["total"]
    return count


def minutes_of(runs: list[dict[str, Any]]) -> float:
    spent = sum(
        (
            datetime.fromisoformat(run["end_at"]) - datetime.fromisoformat(run["start_at"])
            for run in runs
        ),
        timedelta(0),
    )
    return spent / timedelta(minutes=1)


# About 30 s on two idle cores; the bound leaves room for a busy machine.
@pytest.mark.timeout(300)
def test_bad_text_is_refused_alone_among_thousands_of_good_triggers(tmp_path: Path) -> None:
    with v3_daemon(tmp_path, CONFIG, {"alpha": "alpha", "beta": "beta"}) as daemon:
        made = calls(daemon.keys)
        answers = list(zip(made, asyncio.run(send_all(daemon, made)), strict=True))

        failed = [(call.caller, a.status, a.body) for call, a in answers if not 0 < a.status < 500]
        assert not failed, f"{len(failed)} answered 5xx or not at all, e.g. {failed[:3]}"
        refused = [call for call, answer in answers if answer.status == 400]
        assert len(refused) == 40 and all(call.bad for call in refused), [
            (call.caller, call.body[:80]) for call in refused if not call.bad
        ]
        for call, answer in answers:
            if not call.bad:
                assert answer.status == (201 if call.caller == "rest" else 200), (call, answer)
            # Each refusal says what was wrong, in the API's own error shape.
            elif call.caller == "rest":
                assert answer.content_type == "application/problem+json", answer
                [error] = answer.body["errors"]
                assert error["location"].startswith(("body.data[", "body.params.note")), error
            else:
                assert answer.body["status"] == "error", answer
                assert answer.body["message"].startswith("Data cell at table"), answer

        # Every accepted trigger is a run, and every run ends, as a success.
        assert daemon.runs_total() == 3 * GOOD_PER_CALLER
        poll(lambda: total(daemon, "ended") == 3 * GOOD_PER_CALLER, timeout=ENDED_TIMEOUT)
        assert total(daemon, "pending") == 0 and total(daemon, "running") == 0
        assert total(daemon, "success") == 3 * GOOD_PER_CALLER

        runs = all_runs(daemon)
        by_caller = {
            caller: [run for run in runs if run.get("account") == account]
            for caller, account in (("rest", None), ("alpha", "alpha"), ("beta", "beta"))
        }
        assert {caller: len(own) for caller, own in by_caller.items()} == {
            "rest": GOOD_PER_CALLER,
            "alpha": GOOD_PER_CALLER,
            "beta": GOOD_PER_CALLER,
        }
        # Each account is charged the wall time of its own runs, nothing more.
        for account in ("alpha", "beta"):
            status, answer = daemon.call("remaining-runtime", {"key": daemon.keys[account]})
            assert status == 200, answer
            assert answer["data"]["used"] == round(minutes_of(by_caller[account]), 2), account
