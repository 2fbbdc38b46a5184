"""Routes of the customer's file: the customer's own, and a customer's for staff."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from caas.accounts.deps import CurrentUser, CustomerUser
from caas.core.api import ClockDep, DbSession, error_responses
from caas.files import service
from caas.files.schemas import CustomerFileRead, TimelineEntryRead

router = APIRouter(prefix="/api/v1", tags=["customer file"])


@router.get(
    "/me/file",
    response_model=CustomerFileRead,
    summary="My file: purchases, manuals, maintenance, invoices and timeline",
    responses=error_responses(401, 403, 404),
)
def my_file(session: DbSession, clock: ClockDep, user: CustomerUser) -> CustomerFileRead:
    scope = service.own_file(session, user)
    return service.customer_file(session, scope, language=user.language, today=clock.now().date())


@router.get(
    "/me/timeline",
    response_model=list[TimelineEntryRead],
    summary="Everything that happened in my file, oldest first, with time and actor",
    responses=error_responses(401, 403, 404),
)
def my_timeline(session: DbSession, user: CustomerUser) -> list[TimelineEntryRead]:
    return service.timeline(session, service.own_file(session, user))


@router.get(
    "/customers/{customer_id}/file",
    response_model=CustomerFileRead,
    summary="A customer's file (operators; a dealer for their dealership's customers)",
    description="A dealer sees the part of the file about their dealership's sales. "
    "A customer who is not theirs, or anyone else, gets 404.",
    responses=error_responses(401, 404),
)
def customer_file(
    customer_id: Annotated[int, Path(description="Database id of the customer", examples=[7])],
    session: DbSession,
    clock: ClockDep,
    user: CurrentUser,
) -> CustomerFileRead:
    scope = service.file_for(session, user, customer_id)
    return service.customer_file(session, scope, language=user.language, today=clock.now().date())
