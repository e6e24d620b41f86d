"""Shared request parameters: the task-name path and the run-list query of the spec.

Every text parameter is checked for text that cannot be stored (NUL, a lone
surrogate) before its other checks: such a request is answered 400 naming
the parameter (`runyard.api.errors`), never passed on to the store.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import Path, Query
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from runyard.api.errors import UNSTORABLE_TEXT
from runyard.api.schemas import NO_NUL_PATTERN
from runyard.domain.models import EndReason, RunStatus
from runyard.domain.queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_OFFSET,
    RunQuery,
    SortDirection,
    SortField,
)
from runyard.domain.text import text_problem
from runyard.exceptions import InvalidInput


def _storable(value: object) -> object:
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            # No braces in `problem`: pydantic reads the message as a template.
            raise PydanticCustomError(UNSTORABLE_TEXT, problem)
    return value


# Runs before the type's own checks (pattern, length), so NUL in a task name is
# answered as what it is rather than as a pattern mismatch.
StorableText = BeforeValidator(_storable)

TaskNamePath = Annotated[
    str,
    Path(
        alias="taskName",
        description="Task name",
        min_length=1,
        max_length=100,
        pattern=r"^[a-zA-Z0-9._-]+$",
    ),
    StorableText,
]

RunIdPath = Annotated[
    str,
    Path(
        alias="runId",
        description="Run id",
        min_length=1,
        max_length=100,
        json_schema_extra={"pattern": NO_NUL_PATTERN},
    ),
    StorableText,
]


# The spec's sort_field values: every SortField, and "" for the default (created_at).
SortFieldParam = StrEnum(  # type: ignore[misc]  # members built from SortField
    "SortFieldParam", [(field.name, field.value) for field in SortField] + [("DEFAULT", "")]
)
SortFieldParam.__doc__ = """The spec's sort_field values; "" means the default (created_at)."""
_DEFAULT_SORT_FIELD = SortFieldParam("")


class SortDirectionParam(StrEnum):
    """The spec's sort_direction values; "" means the default (desc)."""

    ASC = "asc"
    DESC = "desc"
    DEFAULT = ""


STATUS_VALUES = [*RunStatus, *EndReason]
# What the `status` filter takes, as its JSON Schema says: "" is no filter.
STATUS_FILTER_VALUES = ["", *(item.value for item in STATUS_VALUES)]


def parse_status(value: str) -> tuple[RunStatus | None, EndReason | None]:
    """Split the `status` filter into a phase or an end reason; "" means no filter."""
    if not value:
        return None, None
    if value in RunStatus.__members__.values():
        return RunStatus(value), None
    if value in EndReason.__members__.values():
        return None, EndReason(value)
    allowed = ", ".join(item.value for item in STATUS_VALUES)
    raise InvalidInput("query.status", f"must be one of {allowed}", value)


def run_query(
    limit: Annotated[
        int, Query(description="Max results per page", ge=1, le=MAX_LIMIT)
    ] = DEFAULT_LIMIT,
    offset: Annotated[
        int,
        Query(
            description="Pagination offset (at most 2^63-1, the largest the databases take)",
            ge=0,
            le=MAX_OFFSET,
        ),
    ] = 0,
    status: Annotated[
        str,
        Query(
            description="Filter by run status: a phase (pending, running, ended) "
            "or an end reason (success, failed, ...); empty for any",
            json_schema_extra={"enum": STATUS_FILTER_VALUES},
        ),
        StorableText,
    ] = "",
    task_name: Annotated[
        str,
        Query(
            description="Filter by task name; empty for any",
            json_schema_extra={"pattern": NO_NUL_PATTERN},
        ),
        StorableText,
    ] = "",
    sort_field: Annotated[
        SortFieldParam, Query(description="Field to sort by")
    ] = _DEFAULT_SORT_FIELD,
    sort_direction: Annotated[
        SortDirectionParam, Query(description="Sort direction")
    ] = SortDirectionParam.DEFAULT,
    search: Annotated[
        str,
        Query(
            description="Search query; empty for none",
            json_schema_extra={"pattern": NO_NUL_PATTERN},
        ),
        StorableText,
    ] = "",
) -> RunQuery:
    """Return the RunQuery the spec's query parameters describe."""
    run_status, end_reason = parse_status(status)
    return RunQuery(
        task_name=task_name or None,
        status=run_status,
        end_reason=end_reason,
        search=search or None,
        sort_field=SortField(sort_field.value) if sort_field.value else SortField.CREATED_AT,
        sort_direction=(
            SortDirection(sort_direction.value) if sort_direction.value else SortDirection.DESC
        ),
        limit=limit,
        offset=offset,
    )
