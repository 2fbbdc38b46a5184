"""Routes of delivery: the dealer schedules, dispatches and completes it; all may read it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from caas.accounts.deps import CurrentUser, Dealer, actor_of
from caas.accounts.models import User
from caas.core.api import ClockDep, DbSession, error_responses
from caas.core.idempotency import once
from caas.delivery import service
from caas.delivery.models import Delivery
from caas.delivery.read import delivery_read
from caas.delivery.schemas import DeliveryCreate, DeliveryDispatch, DeliveryRead
from caas.sales.models import Sale
from caas.sales.service import get_sale_for

router = APIRouter(prefix="/api/v1", tags=["delivery"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended command; a retry with the same key acts once",
    ),
]
SaleId = Annotated[int, Path(description="Database id of the order", examples=[1])]

COMMAND_ERRORS = error_responses(401, 403, 404, 409, 422)


def _command(
    session: Session,
    user: User,
    sale_id: int,
    *,
    key: str | None,
    operation: str,
    request: dict[str, Any],
    now: Any,
    act: Callable[[Sale], Delivery],
    status_code: int = 200,
) -> JSONResponse:
    """Run a delivery command once per Idempotency-Key on the dealer's own (locked) sale."""

    def run() -> dict[str, Any]:
        sale = get_sale_for(session, user, sale_id, lock=True)
        return delivery_read(act(sale), sale).model_dump(mode="json")

    response = once(
        session,
        principal=f"user:{user.id}",
        key=key,
        operation=f"{operation}:{sale_id}",
        request=request,
        now=now,
        act=run,
    )
    return JSONResponse(response, status_code=status_code)


@router.post(
    "/sales/{sale_id}/delivery",
    response_model=DeliveryRead,
    status_code=201,
    summary="Schedule the transport of the registered car to the customer's address",
    responses=COMMAND_ERRORS,
)
def schedule_delivery(
    sale_id: SaleId,
    body: DeliveryCreate,
    session: DbSession,
    clock: ClockDep,
    user: Dealer,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()
    return _command(
        session,
        user,
        sale_id,
        key=idempotency_key,
        operation="delivery.schedule",
        request=body.model_dump(mode="json"),
        now=now,
        act=lambda sale: service.schedule_delivery(
            session,
            sale,
            scheduled_for=body.scheduled_for,
            carrier=body.carrier,
            actor=actor_of(user),
            now=now,
        ),
        status_code=201,
    )


@router.post(
    "/sales/{sale_id}/delivery/dispatch",
    response_model=DeliveryRead,
    summary="The carrier has picked the car up: on its way to the customer",
    responses=COMMAND_ERRORS,
)
def dispatch_delivery(
    sale_id: SaleId,
    session: DbSession,
    clock: ClockDep,
    user: Dealer,
    body: DeliveryDispatch | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()
    dispatch = body or DeliveryDispatch()
    return _command(
        session,
        user,
        sale_id,
        key=idempotency_key,
        operation="delivery.dispatch",
        request=dispatch.model_dump(mode="json"),
        now=now,
        act=lambda sale: service.dispatch_delivery(
            session,
            sale,
            tracking_number=dispatch.tracking_number,
            actor=actor_of(user),
            now=now,
        ),
    )


@router.post(
    "/sales/{sale_id}/delivery/complete",
    response_model=DeliveryRead,
    summary="The car is handed over; the order then waits for the phone to be paired",
    responses=COMMAND_ERRORS,
)
def complete_delivery(
    sale_id: SaleId,
    session: DbSession,
    clock: ClockDep,
    user: Dealer,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()
    return _command(
        session,
        user,
        sale_id,
        key=idempotency_key,
        operation="delivery.complete",
        request={},
        now=now,
        act=lambda sale: service.complete_delivery(session, sale, actor=actor_of(user), now=now),
    )


@router.get(
    "/sales/{sale_id}/delivery",
    response_model=DeliveryRead,
    summary="The delivery of an order: date, carrier, address, state",
    responses=error_responses(401, 404),
)
def get_delivery(sale_id: SaleId, session: DbSession, user: CurrentUser) -> DeliveryRead:
    sale = get_sale_for(session, user, sale_id)
    return delivery_read(service.get_delivery(session, sale), sale)
