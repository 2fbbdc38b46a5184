"""A service order's life: proposed, confirmed, parts reserved, done or cancelled."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from caas.core.errors import InvalidInput
from caas.core.history import Actor, record
from caas.upkeep import quotes
from caas.upkeep.models import ServiceOrder
from caas.upkeep.rules import NEEDS, OPEN_STATES
from caas.vehicles.models import Vehicle


def open_order(session: Session, vehicle_id: int, need: str) -> ServiceOrder | None:
    return session.scalars(
        select(ServiceOrder).where(
            ServiceOrder.vehicle_id == vehicle_id,
            ServiceOrder.need == need,
            ServiceOrder.state.in_(OPEN_STATES),
        )
    ).first()


def propose(
    session: Session,
    *,
    vehicle_id: int,
    need: str,
    detail: dict[str, object],
    actor: Actor,
    now: datetime,
) -> ServiceOrder | None:
    """Propose the fix of a car's need at its owner's workshop, quoted.

    None when the car already has an open order for the need (the partial unique index makes
    this hold under concurrent detections too) or has no owner to ask. With the owner's
    standing consent and a quote within it, the order is confirmed at once in the first free
    slot (`caas.upkeep.consent`); otherwise the owner is asked.
    """
    if need not in NEEDS:
        raise InvalidInput(f"unknown need {need!r}", field="need", code="upkeep.unknown_need")
    vehicle = session.get_one(Vehicle, vehicle_id)
    if vehicle.owner_customer_id is None or open_order(session, vehicle_id, need) is not None:
        return None
    quote = quotes.quote_for(session, vehicle=vehicle, need=need, at=now)
    order = ServiceOrder(
        vehicle_id=vehicle_id,
        customer_id=vehicle.owner_customer_id,
        need=need,
        state="proposed",
        workshop_id=quote.workshop_id,
        currency=quote.currency,
        lines=quote.lines,
        net_minor=quote.net_minor,
        vat_minor=quote.vat_minor,
        gross_minor=quote.gross_minor,
        included_in_plan=quote.included_in_plan,
        detail=detail,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(order)
            session.flush()
    except IntegrityError:
        return None  # another detection made the open order for this need meanwhile
    record(
        session,
        at=now,
        actor=actor,
        subject_type="service_order",
        subject_id=order.id,
        customer_id=order.customer_id,
        event="upkeep.proposed",
        to_state="proposed",
        details={
            "vin": vehicle.vin,
            "need": need,
            "workshop_id": order.workshop_id,
            "gross_minor": order.gross_minor,
            "currency": order.currency,
            "included_in_plan": order.included_in_plan,
            **detail,
        },
    )
    return order
