"""The run-list query: filters, sorting and paging, as the API receives them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from runyard.domain.models import EndReason, RunStatus


class SortField(StrEnum):
    TASK_NAME = "task_name"
    STATUS = "status"
    START_AT = "start_at"
    EXIT_CODE = "exit_code"
    DURATION = "duration"
    CREATED_AT = "created_at"


class SortDirection(StrEnum):
    ASC = "asc"
    DESC = "desc"


DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
# The largest offset both databases take: SQLite and PostgreSQL read it as a
# signed 64-bit integer, and one past it fails in the driver.
MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True)
class RunQuery:
    """Which runs to list and in what order.

    `status` filters on the lifecycle phase; `end_reason` on why a run ended
    (the API's `status` parameter accepts either kind of value). `search` is a
    case-insensitive substring match on run id, task name, status, end reason,
    triggered_by and external execution id. Ties in the sort key are broken by
    run id in the same direction, so pages never overlap.
    """

    task_name: str | None = None
    status: RunStatus | None = None
    end_reason: EndReason | None = None
    search: str | None = None
    sort_field: SortField = SortField.CREATED_AT
    sort_direction: SortDirection = SortDirection.DESC
    limit: int = DEFAULT_LIMIT
    offset: int = 0
