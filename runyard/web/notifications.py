"""The in-app notifications page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from runyard.domain.queries import DEFAULT_LIMIT, MAX_LIMIT
from runyard.web.pages import (
    bounded_int,
    context,
    current_session,
    runyard_of,
)
from runyard.web.render import page

router = APIRouter(include_in_schema=False)

NOTIFICATION_STATUSES = ("pending", "delivered", "failed", "dropped")


@router.get("/notifications")
async def notifications_page(request: Request) -> Response:
    """The in-app notifications, newest first, with how each delivery went."""
    session = current_session(request)
    runyard = runyard_of(request)
    given = request.query_params
    status = given.get("status", "")
    if status not in NOTIFICATION_STATUSES:
        status = ""
    limit = bounded_int(given.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = bounded_int(given.get("offset"), 0, 0, 10**12)
    found, total = await runyard.notifications.list(status or None, limit, offset)
    return page(
        request,
        "notifications.html",
        context(
            request,
            session,
            title="Notifications",
            notifications=found,
            total=total,
            dropped=runyard.notifications.dropped,
            status=status,
            statuses=NOTIFICATION_STATUSES,
            limit=limit,
            offset=offset,
        ),
    )
