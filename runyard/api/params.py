"""Shared request parameters: the task-name path and the run-list query of the spec."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import Path, Query

from runyard.domain.models import EndReason, RunStatus
from runyard.domain.queries import DEFAULT_LIMIT, MAX_LIMIT, RunQuery, SortDirection, SortField
from runyard.exceptions import InvalidInput

TaskNamePath = Annotated[
    str,
    Path(
        alias="taskName",
        description="Task name",
        min_length=1,
        max_length=100,
        pattern=r"^[a-zA-Z0-9._-]+$",
    ),
]

RunIdPath = Annotated[str, Path(alias="runId", description="Run id", min_length=1, max_length=100)]


class SortFieldParam(StrEnum):
    """The spec's sort_field values; "" means the default (created_at)."""

    TASK_NAME = "task_name"
    STATUS = "status"
    START_AT = "start_at"
    EXIT_CODE = "exit_code"
    DURATION = "duration"
    CREATED_AT = "created_at"
    DEFAULT = ""


class SortDirectionParam(StrEnum):
    """The spec's sort_direction values; "" means the default (desc)."""

    ASC = "asc"
    DESC = "desc"
    DEFAULT = ""


STATUS_VALUES = [*RunStatus, *EndReason]


def parse_status(value: str | None) -> tuple[RunStatus | None, EndReason | None]:
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
    offset: Annotated[int, Query(description="Pagination offset", ge=0)] = 0,
    status: Annotated[
        str | None,
        Query(
            description="Filter by run status: a phase (pending, running, ended) "
            "or an end reason (success, failed, ...)"
        ),
    ] = None,
    task_name: Annotated[str | None, Query(description="Filter by task name")] = None,
    sort_field: Annotated[
        SortFieldParam, Query(description="Field to sort by")
    ] = SortFieldParam.DEFAULT,
    sort_direction: Annotated[
        SortDirectionParam, Query(description="Sort direction")
    ] = SortDirectionParam.DEFAULT,
    search: Annotated[str | None, Query(description="Search query")] = None,
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
