"""Routes of registration: its state, the dealer's correction of the holder's data, the retry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse

from caas.accounts.deps import CurrentUser, Dealer, actor_of
from caas.core.api import ClockDep, DbSession, error_responses
from caas.core.idempotency import once
from caas.registration import service
from caas.registration.read import registration_read
from caas.registration.schemas import CustomerCorrection, RegistrationRead
from caas.sales.models import Customer
from caas.sales.schemas import CustomerRead
from caas.sales.service import get_sale_for

router = APIRouter(prefix="/api/v1", tags=["registration"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended command; a retry with the same key acts once",
    ),
]
SaleId = Annotated[int, Path(description="Database id of the order", examples=[1])]


@router.get(
    "/sales/{sale_id}/registration",
    response_model=RegistrationRead,
    summary="The car's registration: state, plate, attempts, and why it was refused",
    responses=error_responses(401, 404),
)
def get_registration(sale_id: SaleId, session: DbSession, user: CurrentUser) -> RegistrationRead:
    sale = get_sale_for(session, user, sale_id)
    return registration_read(service.get_registration(session, sale), sale)


@router.post(
    "/sales/{sale_id}/registration/retry",
    response_model=RegistrationRead,
    status_code=202,
    summary="Submit a refused registration again (after correcting the customer's data)",
    description="Only while the order is `registration_rejected`. The order goes back to "
    "`registering` and the registry receives the customer's current data.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def retry_registration(
    sale_id: SaleId,
    session: DbSession,
    clock: ClockDep,
    user: Dealer,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        sale = get_sale_for(session, user, sale_id, lock=True)
        registration = service.retry_registration(session, sale, actor=actor_of(user), now=now)
        return registration_read(registration, sale).model_dump(mode="json")

    response = once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation=f"registration.retry:{sale_id}",
        request={"sale_id": sale_id},
        now=now,
        act=act,
    )
    return JSONResponse(response, status_code=202)


@router.patch(
    "/sales/{sale_id}/customer",
    response_model=CustomerRead,
    summary="Correct the customer's name or address before the car is registered",
    description="Send only the fields to change. The order's history keeps each change with "
    "its value before and after. Refused (409) once the car is registered.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def correct_customer(
    sale_id: SaleId, body: CustomerCorrection, session: DbSession, clock: ClockDep, user: Dealer
) -> Customer:
    sale = get_sale_for(session, user, sale_id, lock=True)
    return service.correct_customer(
        session, sale, correction=body, actor=actor_of(user), now=clock.now()
    )
