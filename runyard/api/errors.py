"""RFC 7807 problem responses, and the handlers that turn every failure into one."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match

from runyard.api.deps import schema_url
from runyard.api.schemas import ErrorModel
from runyard.domain.text import escape_unstorable, text_problem
from runyard.exceptions import (
    ConfigError,
    DiskFull,
    InputQueueFull,
    InvalidInput,
    NodeUnreachable,
    NotFound,
    RunAlreadyEnded,
    RunOnAnotherNode,
    ServiceLifetimeStop,
    ShuttingDown,
    StoreUnavailable,
    UnstorableInput,
)

log = logging.getLogger("runyard.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
_NO_VALUE = object()  # an error detail without a `value` key (missing fields, bad JSON)
# The pydantic error type of a request parameter holding text that cannot be
# stored (runyard.api.params): answered 400, not 422.
UNSTORABLE_TEXT = "unstorable_text"
_PATH_SAFE = "/!$&'()*+,;=:@~"  # RFC 3986 pchar and "/", left as they are


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def error_detail(location: str, message: str, value: object = _NO_VALUE) -> dict[str, Any]:
    """Return one `errors[]` entry; `value` is left out when there is none to show."""
    entry: dict[str, Any] = {"location": location, "message": message}
    if value is not _NO_VALUE:
        try:
            entry["value"] = _shown(jsonable_encoder(value))
        except (TypeError, ValueError):
            entry["value"] = repr(value)
    return entry


def _shown(value: Any) -> Any:
    # A lone surrogate cannot be encoded into the answer: the caller sees its escape.
    if isinstance(value, str):
        return escape_unstorable(value)
    if isinstance(value, list):
        return [_shown(item) for item in value]
    if isinstance(value, dict):
        return {escape_unstorable(str(key)): _shown(item) for key, item in value.items()}
    return value


def problem(
    base: str,
    status: int,
    detail: str,
    instance: str,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    """Return an `application/problem+json` response shaped like the spec's ErrorModel.

    `instance` is the request's path as decoded; it is sent percent-encoded,
    so that it is a URI reference whatever the path held (a space, a NUL).
    """
    body: dict[str, Any] = {
        "$schema": schema_url(base, "ErrorModel"),
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": quote(instance, safe=_PATH_SAFE, errors="backslashreplace"),
    }
    if errors:
        body["errors"] = list(errors)
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


def _request_problem(
    request: Request,
    status: int,
    detail: str,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    return problem(str(request.base_url), status, detail, request.url.path, errors, headers)


# ----- validation messages -----------------------------------------------------


def _location(loc: Sequence[int | str]) -> str:
    """Return a pydantic loc as the spec writes it: ("body", "items", 3) -> body.items[3]."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = escape_unstorable(str(part))
            out += f".{name}" if out else name
    return out


def _one_of(expected: str) -> str:
    # pydantic says "'asc', 'desc' or ''"; the empty choice means "default" and is not listed.
    values = [v for v in re.findall(r"'([^']*)'", expected) if v]
    return "must be one of " + ", ".join(values)


_MESSAGES: dict[str, str] = {
    "greater_than_equal": "must be greater than or equal to {ge}",
    "less_than_equal": "must be less than or equal to {le}",
    "greater_than": "must be greater than {gt}",
    "less_than": "must be less than {lt}",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be a boolean (true or false)",
    "bool_type": "must be a boolean (true or false)",
    "string_type": "must be a string",
    "string_too_short": "must be at least {min_length} characters long",
    "string_too_long": "must be at most {max_length} characters long",
    "string_pattern_mismatch": "must match {pattern}",
    "dict_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be an array",
    "missing": "is required",
    "extra_forbidden": "is not an allowed field",
}

_NUMERIC_BOUNDS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}


def _message(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind in ("enum", "literal_error") and "expected" in ctx:
        return _one_of(str(ctx["expected"]))
    template = _MESSAGES.get(kind)
    if template is not None:
        # A float bound of 1.0 reads better as 1.
        shown = {
            k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in ctx.items()
        }
        try:
            return template.format(**shown)
        except (KeyError, IndexError):
            pass
    message = str(error.get("msg", "is invalid"))
    if message.startswith("Input should be"):
        return "must be" + message[len("Input should be") :]
    return message[:1].lower() + message[1:]


def _value(error: Mapping[str, Any]) -> object:
    if error.get("type") == "missing":
        return _NO_VALUE
    value = error.get("input", _NO_VALUE)
    # Query and path values arrive as text; show numbers as the numbers they are.
    if error.get("type") in _NUMERIC_BOUNDS and isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                continue
    return value


def _detail(errors: Sequence[Mapping[str, Any]], unstorable: bool = False) -> str:
    parts = [f"{e['location']} {e['message']}" for e in errors]
    lead = (
        "The request holds text that cannot be stored" if unstorable else "The request is invalid"
    )
    return f"{lead}: " + "; ".join(parts) + "."


def _unstorable_input(error: Mapping[str, Any]) -> str | None:
    # Any value refused for its text (NUL in a path, a query or a body field)
    # is answered for that text, whatever other check it also failed.
    if error.get("type") == UNSTORABLE_TEXT:
        return str(error.get("msg", ""))
    value = error.get("input")
    return text_problem(value) if isinstance(value, str) else None


async def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in raw):
        ctx = next(e.get("ctx") or {} for e in raw if e.get("type") == "json_invalid")
        return invalid_json_problem(request, str(ctx.get("error", "malformed JSON")))
    text_problems = [_unstorable_input(e) for e in raw]
    if any(text_problems):
        errors = [
            error_detail(_location(e["loc"]), problem, _value(e))
            for e, problem in zip(raw, text_problems, strict=True)
            if problem
        ]
        return _request_problem(request, 400, _detail(errors, unstorable=True), errors)
    errors = [error_detail(_location(e["loc"]), _message(e), _value(e)) for e in raw]
    return _request_problem(request, 422, _detail(errors), errors)


def invalid_json_problem(request: Request, reason: str) -> ProblemResponse:
    """Return the 400 problem of a body that is not valid JSON, for `reason`."""
    return _request_problem(
        request,
        400,
        f"The request body is not valid JSON: {reason}.",
        [error_detail("body", f"is not valid JSON ({reason})")],
    )


async def _input_queue_full(request: Request, exc: Exception) -> ProblemResponse:
    # Nothing was recorded: the same trigger succeeds once queued runs have started.
    return _request_problem(request, 429, str(exc), headers=retry_after_header(5))


async def _invalid_input(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, InvalidInput)
    errors = [error_detail(exc.location, exc.message, exc.value)]
    if isinstance(exc, UnstorableInput):
        return _request_problem(request, 400, _detail(errors, unstorable=True), errors)
    return _request_problem(request, 422, _detail(errors), errors)


async def _not_found(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, NotFound)
    return _request_problem(request, 404, f"No {exc.kind} named {exc.key!r} exists.")


RELOAD_REFUSED = "the new config is invalid; the running config is unchanged"


async def _config_error(request: Request, exc: Exception) -> ProblemResponse:
    # Raised by a reload: the file on disk is bad, the daemon goes on with the old one.
    assert isinstance(exc, ConfigError)
    errors = [
        error_detail("config", problem_text, str(exc.path))
        for problem_text in exc.problems or ["invalid config"]
    ]
    return _request_problem(request, 422, RELOAD_REFUSED, errors)


async def _already_ended(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RunAlreadyEnded)
    reason = exc.run.end_reason.value if exc.run.end_reason else "unknown"
    return _request_problem(
        request, 409, f"Run {exc.run.id} has already ended (end reason {reason}); nothing to stop."
    )


async def _on_another_node(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RunOnAnotherNode)
    return _request_problem(
        request,
        409,
        f"Run {exc.run.id} runs on node {exc.run.node!r}; stop it through that node "
        "(its URL is in GET /api/cluster).",
    )


async def _node_unreachable(request: Request, exc: Exception) -> ProblemResponse:
    # The run's own node holds what was asked (its log, live output, process)
    # and cannot be asked now: a node that is gone may come back, or be taken
    # over (then the run is ended and retried elsewhere).
    assert isinstance(exc, NodeUnreachable)
    return _request_problem(
        request,
        503,
        f"Run {exc.run_id} belongs to node {exc.node!r}: its log and the output data of "
        f"a running run are on that node's disk, and it holds the run's process; that "
        f"node cannot be reached: {exc.reason}.",
    )


async def _service_lifetime_stop(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ServiceLifetimeStop)
    name = exc.run.task_name
    return _request_problem(
        request,
        409,
        f"Run {exc.run.id} is a lifetime of service {name}: stop the service instead "
        f"(POST /api/services/{name}/stop); stopping one lifetime would only restart it.",
    )


async def _shutting_down(request: Request, exc: Exception) -> ProblemResponse:
    return _request_problem(request, 503, "runyard is shutting down and accepts no new runs.")


def retry_after_header(seconds: float) -> dict[str, str]:
    """Return a Retry-After header of `seconds`, in whole seconds (at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


DATABASE_UNAVAILABLE = (
    "runyard's database is unavailable right now ({reason}); nothing was changed. "
    "Try again in a few seconds."
)
DISK_FULL = (
    "The disk that holds runyard's data is full ({reason}); nothing was changed. "
    "runyard takes requests again by itself once space is freed."
)


async def _store_unavailable(request: Request, exc: Exception) -> ProblemResponse:
    # The database is restarting, unreachable or locked: the same request can succeed later.
    assert isinstance(exc, StoreUnavailable)
    return _request_problem(
        request,
        503,
        DATABASE_UNAVAILABLE.format(reason=exc),
        headers=retry_after_header(exc.retry_after),
    )


async def _disk_full(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, DiskFull)
    return _request_problem(
        request, 507, DISK_FULL.format(reason=exc), headers=retry_after_header(exc.retry_after)
    )


async def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and detail == HTTPStatus.NOT_FOUND.phrase:
        detail = f"No route matches {request.url.path}."
    elif status == 405 and detail == HTTPStatus.METHOD_NOT_ALLOWED.phrase:
        allowed = _allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}"
        detail += f"; allowed: {allowed}." if allowed else "."
        return _request_problem(request, status, detail, headers={"Allow": allowed})
    return _request_problem(request, status, detail, headers=exc.headers)


def _allowed_methods(request: Request) -> str:
    """Return every method some route answers on this path (`Allow` of a 405).

    Starlette names only the methods of the first route matching the path,
    while GET and POST of one path are often two routes: ask the routes, for
    each method, whether they would take the request.
    """
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


async def _unexpected(request: Request, exc: Exception) -> ProblemResponse:
    # A bug: keep the traceback in the log, never in the answer.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _request_problem(request, 500, "An unexpected error occurred; see the daemon's log.")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error raised while handling a request with a problem document."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(InputQueueFull, _input_queue_full)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(ConfigError, _config_error)
    app.add_exception_handler(RunAlreadyEnded, _already_ended)
    app.add_exception_handler(RunOnAnotherNode, _on_another_node)
    app.add_exception_handler(NodeUnreachable, _node_unreachable)
    app.add_exception_handler(ServiceLifetimeStop, _service_lifetime_stop)
    app.add_exception_handler(ShuttingDown, _shutting_down)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(DiskFull, _disk_full)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Return OpenAPI response entries for `statuses`, each an ErrorModel problem."""
    return {
        status: {
            "model": ErrorModel,
            "description": HTTPStatus(status).phrase,
        }
        for status in statuses
    }
