"""In-app notifications: what the routes produced and how its deliveries went."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query

from runyard.api import bodies, schemas
from runyard.api.deps import RunyardDep, SchemaBase
from runyard.api.errors import problem_responses
from runyard.domain.queries import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET

router = APIRouter(tags=["notifications"], responses=problem_responses(401, 422, 500))


class NotificationStatusParam(StrEnum):
    ANY = ""
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DROPPED = "dropped"


@router.get("/api/notifications", summary="List notifications")
async def list_notifications(
    runyard: RunyardDep,
    base: SchemaBase,
    limit: Annotated[
        int, Query(description="Max results per page", ge=1, le=MAX_LIMIT)
    ] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(description="Pagination offset", ge=0, le=MAX_OFFSET)] = 0,
    status: Annotated[
        NotificationStatusParam, Query(description="Filter by status; empty for any")
    ] = NotificationStatusParam.ANY,
) -> schemas.NotificationsResponseBody:
    """Return one page of notifications, newest first, with the total and the drop count."""
    found, total = await runyard.notifications.list(status.value or None, limit, offset)
    return bodies.notifications_body(found, total, runyard.notifications.dropped, base)
