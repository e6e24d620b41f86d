"""The OpenAPI document at /openapi.json: FastAPI's, completed with what it cannot know.

Errors go out as problem+json, public routes need no token, and each task
gets its own trigger operation: a task's params (their names, which are
required, their choices) are part of its config, so one operation for every
task could only describe `params` as "any object", and answer 422 to much of
what it documents. For the same reason a new API key's `account` lists the
accounts of the config. The document is rebuilt when a reload changes either.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from runyard.api.auth import PUBLIC_ROUTES
from runyard.api.errors import PROBLEM_MEDIA_TYPE
from runyard.api.schemas import INPUT_DATA_SCHEMA, NO_NUL_PATTERN, PARAM_VALUE_SCHEMA
from runyard.domain.models import ParamSpec, TaskDefinition

TRIGGER_PATH = "/api/tasks/{taskName}/run"

CREATE_KEY_SCHEMA = "CreateKeyRequest"

ConfigKey = tuple[tuple[tuple[str, tuple[ParamSpec, ...]], ...], tuple[str, ...]]


def serve_document(
    app: FastAPI,
    tasks: Callable[[], Sequence[TaskDefinition]],
    accounts: Callable[[], Sequence[str]],
) -> None:
    """Make `app.openapi()` return the completed document for the current `tasks()`."""
    built_for: list[ConfigKey] = []

    def openapi() -> dict[str, Any]:
        current, account_ids = tasks(), tuple(accounts())
        key: ConfigKey = (tuple((task.name, task.params) for task in current), account_ids)
        if app.openapi_schema is None or built_for != [key]:
            app.openapi_schema = build_document(app, current, account_ids)
            built_for[:] = [key]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_document(
    app: FastAPI, tasks: Sequence[TaskDefinition], accounts: Sequence[str] = ()
) -> dict[str, Any]:
    """Return the OpenAPI document of `app` with one trigger operation per task."""
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    _problems_as_problem_json(document)
    document.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"}
    }
    document["security"] = [{"bearer": []}]
    _public_routes_need_no_token(document)
    _trigger_per_task(document, tasks)
    _key_accounts(document, accounts)
    return document


def _key_accounts(document: dict[str, Any], accounts: Sequence[str]) -> None:
    # A key can only be made for an account the config declares.
    schema = document.get("components", {}).get("schemas", {}).get(CREATE_KEY_SCHEMA)
    if schema is not None and accounts:
        schema["properties"]["account"]["enum"] = sorted(accounts)


def _problems_as_problem_json(document: dict[str, Any]) -> None:
    # FastAPI documents every response model as application/json; errors go out as
    # application/problem+json.
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if str(status)[:1] in ("4", "5") and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")


def _public_routes_need_no_token(document: dict[str, Any]) -> None:
    for path, path_item in document.get("paths", {}).items():
        if path in PUBLIC_ROUTES:
            for operation in path_item.values():
                operation["security"] = []


def _trigger_per_task(document: dict[str, Any], tasks: Sequence[TaskDefinition]) -> None:
    paths: dict[str, Any] = document.get("paths", {})
    generic = paths.pop(TRIGGER_PATH, {}).get("post")
    if generic is None:
        return
    triggers: dict[str, Any] = {}
    for task in tasks:
        operation = copy.deepcopy(generic)
        operation["operationId"] = f"trigger_{task.name}"
        operation["summary"] = f"Trigger {task.name}"
        operation["parameters"] = [
            parameter
            for parameter in operation.get("parameters", [])
            if parameter.get("in") != "path"
        ]
        operation["requestBody"] = {
            "content": {"application/json": {"schema": _trigger_body(task)}},
            # Without a body no param is given: a task with a required one needs it.
            "required": any(_required(spec) for spec in task.params),
        }
        # A task name is path-safe (letters, digits, ".", "_", "-").
        triggers[f"/api/tasks/{task.name}/run"] = {"post": operation}
    # After the other operations, in the task order of `GET /api/tasks`.
    document["paths"] = {**paths, **triggers}


def _trigger_body(task: TaskDefinition) -> dict[str, Any]:
    properties = {spec.name: _param_value(spec) for spec in task.params}
    required = [spec.name for spec in task.params if _required(spec)]
    params: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "description": "Values of the params this task declares"
        + ("" if properties else " (it declares none)"),
    }
    if required:
        params["required"] = required
    body: dict[str, Any] = {
        "type": "object",
        "properties": {"params": params, "data": INPUT_DATA_SCHEMA},
        "additionalProperties": False,
        "title": f"TriggerRequest for {task.name}",
    }
    if required:
        body["required"] = ["params"]
        return body
    # Without a required param the body may be left out, or be null.
    return {"anyOf": [body, {"type": "null"}]}


def _required(spec: ParamSpec) -> bool:
    # A default stands in for a missing value, required or not.
    return spec.required and spec.default is None


def _param_value(spec: ParamSpec) -> dict[str, Any]:
    if not spec.choices:
        return dict(PARAM_VALUE_SCHEMA)
    # A number or a boolean is taken as its text (runyard.domain.params), so
    # the JSON values whose text is a choice are choices too.
    values: list[Any] = []
    for choice in spec.choices:
        values.append(choice)
        values.extend(_json_values_reading(choice))
    return {"enum": values, "pattern": NO_NUL_PATTERN}


def _json_values_reading(text: str) -> list[Any]:
    """Return the JSON numbers and booleans whose text (as params take it) is `text`."""
    if text in ("true", "false"):
        return [text == "true"]
    try:
        number = int(text)
    except ValueError:
        pass
    else:
        return [number] if str(number) == text else []
    try:
        real = float(text)
    except ValueError:
        return []
    # Not 2.0 for "2.0": JSON Schema holds 2 equal to it, and 2 reads "2".
    if not math.isfinite(real) or real.is_integer() or str(real) != text:
        return []
    return [real]
