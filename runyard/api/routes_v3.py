"""`/api/v3/...`: the endpoints of the hosted automation service's v3 API, wire-compatible.

Bodies are read by hand rather than through pydantic models: the hosted
service answers every problem with `{"status": "error", "message": ...}` and
its own messages, ignores unknown fields, and takes the key in the body.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from runyard.api.auth import presented_token
from runyard.api.errors import DATABASE_UNAVAILABLE, DISK_FULL
from runyard.app import Runyard
from runyard.body_parser import STAGED_INPUT_KEY, BodyJsonError, JsonProblem, decode_json
from runyard.domain.accounts import DEFAULT_RATE_LIMIT
from runyard.domain.text import text_problem
from runyard.exceptions import DiskFull, InputQueueFull, ShuttingDown, StoreUnavailable, V3Error
from runyard.v3.callers import Caller
from runyard.v3.messages import LINK_KEY, QUEUED_MESSAGE
from runyard.v3.service import V3Service

log = logging.getLogger("runyard.api.v3")

PREFIX = "/api/v3"

_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%fZ"
BODY_OBJECT = "The request body must be a JSON object."
# The text fields of every endpoint's body; `data` is checked cell by cell
# where it is read (runyard.v3.service.parse_input), to name the cell.
_TEXT_FIELDS = ("key", "name", "pw", "pid", "count")


def error_response(status: int, message: str, retry_after: float | None = None) -> JSONResponse:
    """Return the v3 error body with `status` (and Retry-After, in whole seconds, if given)."""
    headers = None if retry_after is None else {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return JSONResponse(
        {"status": "error", "message": message}, status_code=status, headers=headers
    )


async def _answer(work: Callable[[], Awaitable[dict[str, Any]]]) -> Response:
    try:
        return JSONResponse(await work())
    except V3Error as error:
        return error_response(error.status, error.message, error.retry_after)
    except ShuttingDown:
        return error_response(503, "runyard is shutting down; try again in a moment.")
    except DiskFull as error:
        return error_response(507, DISK_FULL.format(reason=error), error.retry_after)
    except InputQueueFull as error:
        return error_response(429, str(error))
    except StoreUnavailable as error:
        # v3 clients retry a 503 with backoff.
        return error_response(503, DATABASE_UNAVAILABLE.format(reason=error), error.retry_after)
    except Exception:
        log.exception("v3 call failed")
        return error_response(500, "Internal error in runyard; the daemon log has the details.")


def json_problem_message(problem: JsonProblem) -> str:
    """Return the v3 error message for a body that is not JSON runyard can read."""
    if problem.kind == "utf8":
        return "The request body is not valid JSON: it is not UTF-8 text."
    if problem.kind == "syntax":
        return (
            f"The request body is not valid JSON (line {problem.line}, "
            f"column {problem.column}: {problem.message})."
        )
    return (
        "The request body is JSON runyard cannot read: a number is too long "
        "or arrays are nested too deeply."
    )


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = decode_json(raw)
    except BodyJsonError as error:
        raise V3Error(400, json_problem_message(error.problem)) from None
    if not isinstance(body, dict):
        raise V3Error(400, BODY_OBJECT)
    # Text that cannot be stored, hashed or shown back is refused before the
    # key is looked up: a lone surrogate in `key` would fail its hash.
    for field in _TEXT_FIELDS:
        value = body.get(field)
        problem = text_problem(value) if isinstance(value, str) else None
        if problem is not None:
            raise V3Error(400, f"{field} {problem}.")
    return body


async def _caller(request: Request, body: dict[str, Any], v3: V3Service) -> Caller:
    """Authenticate the body's `key` (or a bearer header), then count the call."""
    key = body.get("key")
    if key is None:
        key = presented_token(request.scope, allow_query=False)
    caller = await v3.authenticate(key)
    await v3.count_call(caller)
    return caller


def _runyard(request: Request) -> Runyard:
    # Straight from the app rather than through a FastAPI dependency: these are
    # the busiest routes, and solving a dependency costs each call ~10 us.
    runyard: Runyard = request.app.state.runyard
    return runyard


def _time(value: datetime) -> str:
    return value.strftime(_TIMESTAMP)


def _minutes(value: float) -> float | int:
    # 15000 rather than 15000.0, as the hosted service prints whole minutes.
    return int(value) if float(value).is_integer() else value


async def trigger(request: Request) -> Response:
    """Start a run of the automation `name` with optional input `data`; queued when busy."""
    runyard = _runyard(request)

    async def work() -> dict[str, Any]:
        body = await _body(request)
        caller = await _caller(request, body, runyard.v3)
        outcome = await runyard.v3.trigger(
            caller,
            body.get("name"),
            body.get("data"),
            lambda: str(request.base_url),
            request.scope.get(STAGED_INPUT_KEY),
        )
        if outcome.started:
            return {LINK_KEY: outcome.link}
        return {"status": "queued", "message": QUEUED_MESSAGE}

    return await _answer(work)


async def run_reports(request: Request) -> Response:
    """Return the account's most recent runs, newest first (`count`, default 5)."""
    runyard = _runyard(request)

    async def work() -> dict[str, Any]:
        body = await _body(request)
        caller = await _caller(request, body, runyard.v3)
        reports = await runyard.v3.run_reports(caller, body.get("count"))
        return {
            "status": "success",
            "data": {
                "reports": [
                    {
                        "task_name": report.task_name,
                        "status": report.status,
                        "description": report.description,
                        "created_at": _time(report.created_at),
                        "updated_at": _time(report.updated_at),
                    }
                    for report in reports
                ]
            },
        }

    return await _answer(work)


async def run_data(request: Request) -> Response:
    """Return the status and output data of the newest run of the automation `name`."""
    runyard = _runyard(request)

    async def work() -> dict[str, Any]:
        body = await _body(request)
        caller = await _caller(request, body, runyard.v3)
        status, data = await runyard.v3.run_data(caller, body.get("name"))
        return {"status": status, "data": data}

    return await _answer(work)


async def remaining_runtime(request: Request) -> Response:
    """Return used, allowance and remaining minutes of the current billing period."""
    runyard = _runyard(request)

    async def work() -> dict[str, Any]:
        body = await _body(request)
        caller = await _caller(request, body, runyard.v3)
        spent = await runyard.v3.remaining_runtime(caller)
        return {
            "status": "success",
            "data": {
                "used": _minutes(spent.used),
                "allowance": _minutes(spent.allowance),
                "remaining": _minutes(spent.remaining),
            },
        }

    return await _answer(work)


async def list_automations(request: Request) -> Response:
    """Return the names the account may pass to /trigger."""
    runyard = _runyard(request)

    async def work() -> dict[str, Any]:
        body = await _body(request)
        caller = await _caller(request, body, runyard.v3)
        return {"status": "success", "data": {"names": runyard.v3.list_automations(caller)}}

    return await _answer(work)


async def stop(request: Request) -> Response:
    """Stop the run whose viewer link carries `pw` (its password) and `pid`."""
    runyard = _runyard(request)

    async def work() -> dict[str, Any]:
        body = await _body(request)
        client = request.client.host if request.client else "unknown"
        runyard.v3.count_anonymous_call(client, DEFAULT_RATE_LIMIT)
        stopped = await runyard.v3.stop(body.get("pid"), body.get("pw"))
        return {"stopped": stopped}

    return await _answer(work)


# Plain Starlette routes, added to the app ahead of its FastAPI routers. They
# use nothing FastAPI adds (bodies are read by hand, every answer is built
# here), and FastAPI's request handling and router matching cost each call
# ~50 us, a sixth of a trigger's time (bench/http.py). The v3 spec pages, not
# runyard's OpenAPI document, describe these endpoints.
ENDPOINTS: dict[str, Callable[[Request], Awaitable[Response]]] = {
    "/trigger": trigger,
    "/run-reports": run_reports,
    "/run-data": run_data,
    "/remaining-runtime": remaining_runtime,
    "/list-automations": list_automations,
    "/stop": stop,
}


def add_routes(app: FastAPI) -> None:
    """Add the v3 endpoints to `app`, each answering POST only."""
    for path, endpoint in ENDPOINTS.items():
        app.add_route(PREFIX + path, endpoint, methods=["POST"], include_in_schema=False)
