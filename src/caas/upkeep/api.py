"""Routes of upkeep: the customer's service orders and choices, the workshop's bookings."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.deps import CurrentUser, CustomerUser, Workshop, actor_of
from caas.accounts.models import Role, User
from caas.core.api import ClockDep, DbSession, answer_once, error_responses
from caas.core.errors import NotFound
from caas.sales import service as sales
from caas.upkeep import calendar, consent, orders, workshops
from caas.upkeep.models import ServiceOrder
from caas.upkeep.models import Workshop as WorkshopRow
from caas.upkeep.read import order_read
from caas.upkeep.schemas import (
    CancelRequest,
    ConfirmRequest,
    DoneRequest,
    PreferencesRead,
    PreferencesWrite,
    ServiceOrderRead,
    WorkshopRead,
)

router = APIRouter(prefix="/api/v1/upkeep", tags=["upkeep"])

OrderId = Annotated[int, Path(ge=1, description="The service order's id", examples=[12])]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended command; a retry with the same key acts once",
    ),
]


def _answer(
    session: Session,
    user: User,
    key: str | None,
    operation: str,
    request: dict[str, Any],
    now: datetime,
    act: Any,
) -> JSONResponse:
    def run() -> dict[str, Any]:
        order: ServiceOrder = act()
        return order_read(session, order, now=now).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=key,
        operation=operation,
        request=request,
        now=now,
        act=run,
    )


def _order_for(session: Session, user: User, order_id: int) -> ServiceOrder:
    if user.role == Role.CUSTOMER:
        return orders.order_for_customer(session, user, order_id)
    if user.role == Role.WORKSHOP:
        return orders.order_for_workshop(session, user, order_id)
    raise NotFound("no such service order", code="upkeep.order_not_found")


@router.get(
    "/orders",
    response_model=list[ServiceOrderRead],
    summary="My cars' service orders, newest first",
    responses=error_responses(401, 403),
)
def list_orders(session: DbSession, clock: ClockDep, user: CustomerUser) -> list[ServiceOrderRead]:
    customer = sales.customer_of_user(session, user)
    now = clock.now()
    return [
        order_read(session, o, now=now) for o in orders.orders_of_customer(session, customer.id)
    ]


@router.get(
    "/orders/{order_id}",
    response_model=ServiceOrderRead,
    summary="One service order, with the free slots to confirm it in",
    description="The car's owner or the workshop it is booked at; anyone else gets 404.",
    responses=error_responses(401, 404),
)
def get_order(
    order_id: OrderId, session: DbSession, clock: ClockDep, user: CurrentUser
) -> ServiceOrderRead:
    return order_read(session, _order_for(session, user, order_id), now=clock.now())


@router.post(
    "/orders/{order_id}/confirm",
    response_model=ServiceOrderRead,
    summary="Confirm a proposed order in one of its offered slots",
    description="Takes the slot and reserves the parts at the workshop. When someone has "
    "just taken the slot the answer is 409 `upkeep.slot_taken` with the next free slots.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def confirm_order(
    order_id: OrderId,
    body: ConfirmRequest,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> ServiceOrder:
        order = orders.order_for_customer(session, user, order_id)
        return orders.confirm(
            session, order, slot_start=body.slot_start, actor=actor_of(user), now=now
        )

    return _answer(
        session, user, idempotency_key, f"upkeep.confirm:{order_id}",
        body.model_dump(mode="json"), now, act,
    )  # fmt: skip


@router.post(
    "/orders/{order_id}/cancel",
    response_model=ServiceOrderRead,
    summary="Cancel an order (its customer or its workshop): the slot and parts are freed",
    responses=error_responses(401, 404, 409, 422),
)
def cancel_order(
    order_id: OrderId,
    body: CancelRequest,
    session: DbSession,
    clock: ClockDep,
    user: CurrentUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> ServiceOrder:
        order = _order_for(session, user, order_id)
        return orders.cancel(session, order, actor=actor_of(user), reason=body.reason, now=now)

    return _answer(
        session, user, idempotency_key, f"upkeep.cancel:{order_id}",
        body.model_dump(mode="json"), now, act,
    )  # fmt: skip


@router.post(
    "/orders/{order_id}/parts-reserved",
    response_model=ServiceOrderRead,
    summary="Mark the parts of a confirmed order set aside (its workshop)",
    description="Takes them from the workshop's stock; 409 `upkeep.out_of_stock` otherwise.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def reserve_parts(
    order_id: OrderId,
    session: DbSession,
    clock: ClockDep,
    user: Workshop,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> ServiceOrder:
        order = orders.order_for_workshop(session, user, order_id)
        return orders.reserve_parts(session, order, actor=actor_of(user), now=now)

    return _answer(session, user, idempotency_key, f"upkeep.parts:{order_id}", {}, now, act)


@router.post(
    "/orders/{order_id}/done",
    response_model=ServiceOrderRead,
    summary="Record the work of an order done (its workshop)",
    description="A service goes into the car's maintenance history; what the customer's plan "
    "does not include is charged to their default card and invoiced.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def record_done(
    order_id: OrderId,
    body: DoneRequest,
    session: DbSession,
    clock: ClockDep,
    user: Workshop,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> ServiceOrder:
        order = orders.order_for_workshop(session, user, order_id)
        return orders.complete(
            session, order, workshop_user=user, odometer_km=body.odometer_km, now=now
        )

    return _answer(
        session, user, idempotency_key, f"upkeep.done:{order_id}",
        body.model_dump(mode="json"), now, act,
    )  # fmt: skip


@router.get(
    "/workshop/bookings",
    response_model=list[ServiceOrderRead],
    summary="My workshop's calendar: the orders booked from a day on",
    responses=error_responses(401, 403, 404, 422),
)
def workshop_bookings(
    session: DbSession,
    clock: ClockDep,
    user: Workshop,
    since: Annotated[
        date | None, Query(description="First day (the workshop's), today when omitted")
    ] = None,
    days: Annotated[int, Query(ge=1, le=62, description="How many days")] = 7,
) -> list[ServiceOrderRead]:
    place = workshops.workshop_of_staff(session, user.id)
    if place is None:
        raise NotFound("you are not attached to a workshop", code="upkeep.no_workshop")
    now = clock.now()
    zone = ZoneInfo(place.timezone)
    first = since or now.astimezone(zone).date()
    start = datetime.combine(first, time(0), tzinfo=zone)
    booked = calendar.bookings_of(session, place.id, start, start + timedelta(days=days))
    return [order_read(session, o, now=now) for o in booked]


@router.get(
    "/preferences",
    response_model=PreferencesRead,
    summary="My preferred workshop and standing consent (off by default)",
    responses=error_responses(401, 403),
)
def get_preferences(session: DbSession, user: CustomerUser) -> PreferencesRead:
    customer = sales.customer_of_user(session, user)
    return preferences_read(session, customer.id, customer.country)


def preferences_read(session: Session, customer_id: int, country: str) -> PreferencesRead:
    from caas.catalog.models import Country

    preference = consent.preference_of(session, customer_id)
    if preference is None:
        currency = session.get_one(Country, country).currency
        return PreferencesRead(
            auto_order=False, auto_limit_minor=0, preferred_workshop_id=None, currency=currency
        )
    return PreferencesRead(
        auto_order=preference.auto_order,
        auto_limit_minor=preference.auto_limit_minor,
        preferred_workshop_id=preference.preferred_workshop_id,
        currency=preference.currency,
    )


@router.put(
    "/preferences",
    response_model=PreferencesRead,
    summary="Choose my preferred workshop and standing consent",
    description="With `auto_order`, orders whose quote is within `auto_limit_minor` are "
    "placed in the first free slot and you are told; otherwise you are asked.",
    responses=error_responses(401, 403, 422),
)
def put_preferences(
    body: PreferencesWrite,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()
    customer = sales.customer_of_user(session, user)

    def act() -> dict[str, Any]:
        consent.set_preferences(
            session,
            customer=customer,
            auto_order=body.auto_order,
            auto_limit_minor=body.auto_limit_minor,
            preferred_workshop_id=body.preferred_workshop_id,
            actor=actor_of(user),
            now=now,
        )
        return preferences_read(session, customer.id, customer.country).model_dump(mode="json")

    return answer_once(
        session,
        user_id=user.id,
        key=idempotency_key,
        operation="upkeep.preferences",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
    )


@router.get(
    "/workshops",
    response_model=list[WorkshopRead],
    summary="Official workshops of my country, to choose my preferred one",
    responses=error_responses(401, 403),
)
def list_workshops(session: DbSession, user: CustomerUser) -> list[WorkshopRead]:
    customer = sales.customer_of_user(session, user)
    rows = session.scalars(
        select(WorkshopRow)
        .where(WorkshopRow.country == customer.country)
        .order_by(WorkshopRow.name)
    )
    return [WorkshopRead.model_validate(w, from_attributes=True) for w in rows]
