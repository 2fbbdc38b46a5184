"""Routes of the in-app notification list: the caller's own messages, read and unread."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from caas.accounts.deps import CurrentUser
from caas.core.api import ClockDep, DbSession, error_responses
from caas.notifications import service
from caas.notifications.models import Notification
from caas.notifications.schemas import NotificationPage, NotificationRead, ReadAllResult

router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get(
    "/notifications",
    response_model=NotificationPage,
    summary="The caller's notifications, newest first, with the unread count",
    responses=error_responses(401, 422),
)
def list_notifications(
    session: DbSession,
    user: CurrentUser,
    unread_only: Annotated[bool, Query(description="Only the unread ones")] = False,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many")] = 50,
    offset: Annotated[int, Query(ge=0, description="Skip this many first (paging)")] = 0,
) -> NotificationPage:
    items, total, unread = service.list_notifications(
        session, user_id=user.id, unread_only=unread_only, limit=limit, offset=offset
    )
    return NotificationPage(
        total=total, unread=unread, items=[NotificationRead.model_validate(n) for n in items]
    )


@router.post(
    "/notifications/{notification_id}/read",
    response_model=NotificationRead,
    summary="Mark one of the caller's notifications read (naturally idempotent)",
    responses=error_responses(401, 404),
)
def mark_read(
    notification_id: Annotated[
        int, Path(description="Database id of the notification", examples=[31])
    ],
    session: DbSession,
    clock: ClockDep,
    user: CurrentUser,
) -> Notification:
    return service.mark_read(
        session, user_id=user.id, notification_id=notification_id, now=clock.now()
    )


@router.post(
    "/notifications/read-all",
    response_model=ReadAllResult,
    summary="Mark every notification of the caller read (naturally idempotent)",
    responses=error_responses(401),
)
def mark_all_read(session: DbSession, clock: ClockDep, user: CurrentUser) -> ReadAllResult:
    return ReadAllResult(marked=service.mark_all_read(session, user_id=user.id, now=clock.now()))
