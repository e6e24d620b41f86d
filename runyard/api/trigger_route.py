"""`POST /api/tasks/{taskName}/run` without FastAPI's request handling, for the common request.

The trigger is the REST API's busiest call. Through FastAPI, solving its
dependencies, validating the parameters one by one and matching it through
the included routers cost more than the rest of the request together
(~250 us of ~420 us in-process, see docs/DESIGN.md, "HTTP request cost").

This plain Starlette route, added ahead of the routers, answers a trigger
whose path holds a valid task name, whose query string is empty and whose
body is empty or a JSON object that `TriggerRequest` takes as it is: the
same service call and the same 201 body, serialized as FastAPI serializes
the route's response model. Any other request (a `wait`, a body FastAPI
would refuse, a content type it would not read as JSON) is handed back to
the router, which passes it on to the FastAPI route in
runyard/api/routes_tasks.py: every refusal keeps FastAPI's validation and
its problem document, word for word, and the OpenAPI document keeps
describing the route from there.

Errors the service raises (unknown task 404, queue full 429, store
unavailable 503, ...) go to the app's exception handlers as they do from the
FastAPI route.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from runyard.api import bodies, schemas
from runyard.api.deps import base_url
from runyard.app import Runyard
from runyard.body_parser import STAGED_INPUT_KEY

PATH = "/api/tasks/{taskName}/run"
# The task names TaskNamePath (runyard/api/params.py) takes: ASCII only, so
# none holds text that cannot be stored.
_TASK_NAME = re.compile(r"[a-zA-Z0-9._-]{1,100}")
# Set on a request handed back to the router, so this route lets it pass.
_HANDED_BACK = "runyard.trigger_handed_back"
# What FastAPI does with the route's return value (response model `Run`,
# response_model_exclude_none): dump it through a TypeAdapter of the model.
_RUN = TypeAdapter(schemas.Run)


class _FastTriggerRoute(Route):
    """A route that steps aside for requests it has handed back to the router."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_HANDED_BACK):
            return Match.NONE, {}
        return super().matches(scope)


def _reads_as_json(content_type: str | None) -> bool:
    # Narrower than FastAPI (which also reads `application/<x>+json`): a body
    # sent as anything else is left to the FastAPI route.
    return (
        content_type is not None
        and content_type.partition(";")[0].strip().lower() == "application/json"
    )


def _plain_body(raw: bytes, content_type: str | None) -> schemas.TriggerRequest | None | bool:
    """Return the trigger's body as the FastAPI route would take it; False when unsure."""
    if not raw:
        return None
    if not _reads_as_json(content_type):
        return False
    try:
        value: Any = json.loads(raw)  # what FastAPI's request.json() does
    except (ValueError, RecursionError):
        return False
    if value is None:
        return None  # FastAPI takes a JSON null as no body
    if not isinstance(value, dict):
        return False
    try:
        return schemas.TriggerRequest.model_validate(value)
    except ValidationError:
        return False


async def trigger(request: Request) -> Response:
    """Start a run and answer it with 201, or hand the request back to the FastAPI route."""
    scope = request.scope
    task_name: str = scope["path_params"]["taskName"]
    raw = await request.body()
    body = (
        _plain_body(raw, request.headers.get("content-type"))
        if not scope.get("query_string") and _TASK_NAME.fullmatch(task_name)
        else False
    )
    if body is False:
        return _HandBack(raw)
    assert body is None or isinstance(body, schemas.TriggerRequest)
    runyard: Runyard = request.app.state.runyard
    runs = await runyard.trigger(
        task_name,
        body.params if body is not None else {},
        data=body.data if body is not None else None,
        # A large body's data, parsed off the event loop (api/uploads.py).
        staged=scope.get(STAGED_INPUT_KEY),
    )
    answer = bodies.run_body(runs[0], base_url(scope))
    return Response(
        _RUN.dump_json(answer, by_alias=True, exclude_none=True),
        status_code=201,
        media_type="application/json",
    )


class _HandBack(Response):
    """Not an answer: route the request again, past this route, with its body replayed."""

    def __init__(self, body: bytes) -> None:
        self._raw = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_HANDED_BACK] = True
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": self._raw, "more_body": False}

        await scope["router"](scope, replay, send)


def route() -> Route:
    """Return the route to put ahead of the app's routers."""
    return _FastTriggerRoute(PATH, trigger, methods=["POST"], include_in_schema=False)
