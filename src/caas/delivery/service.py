"""The rules of delivery: scheduling the transport of the registered car, dispatching it and
handing it over at the customer's address."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.core.errors import Conflict, NotFound
from caas.core.history import Actor, record
from caas.delivery.models import Delivery
from caas.delivery.rules import DELIVERY, check_delivery_date
from caas.sales.models import Customer, Sale
from caas.sales.rules import ORDER
from caas.sales.service import transition_order
from caas.vehicles.service import vehicle_for_sale


def delivery_of(session: Session, sale_id: int, *, lock: bool = False) -> Delivery | None:
    query = select(Delivery).where(Delivery.sale_id == sale_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def get_delivery(session: Session, sale: Sale) -> Delivery:
    delivery = delivery_of(session, sale.id)
    if delivery is None:
        raise NotFound("no delivery is scheduled for this order", code="delivery.not_scheduled")
    return delivery


def _scheduled(session: Session, sale: Sale, to_state: str) -> Delivery:
    """The order's delivery, locked, when the order may move to `to_state`; else 409."""
    ORDER.check(sale.state, to_state)
    delivery = delivery_of(session, sale.id, lock=True)
    if delivery is None:
        raise Conflict("no delivery is scheduled for this order", code="delivery.not_scheduled")
    return delivery


def _record(
    session: Session, delivery: Delivery, event: str, from_state: str | None, *, actor: Actor
) -> None:
    record(
        session,
        at=delivery.updated_at,
        actor=actor,
        subject_type="delivery",
        subject_id=delivery.id,
        event=event,
        from_state=from_state,
        to_state=delivery.state,
        details={"carrier": delivery.carrier, "tracking_number": delivery.tracking_number},
    )


def schedule_delivery(
    session: Session,
    sale: Sale,
    *,
    scheduled_for: date,
    carrier: str,
    actor: Actor,
    now: datetime,
) -> Delivery:
    """Book the transport of the registered car to the customer's current address."""
    check_delivery_date(scheduled_for, today=now.date())
    ORDER.check(sale.state, "delivery_scheduled")
    customer = session.get_one(Customer, sale.customer_id)
    delivery = Delivery(
        sale_id=sale.id,
        state="scheduled",
        scheduled_for=scheduled_for,
        carrier=carrier,
        recipient=customer.full_name,
        street=customer.street,
        postal_code=customer.postal_code,
        city=customer.city,
        country=customer.country,
        created_at=now,
        scheduled_at=now,
        updated_at=now,
    )
    session.add(delivery)
    session.flush()
    _record(session, delivery, "delivery.scheduled", None, actor=actor)
    transition_order(
        session,
        sale,
        "delivery_scheduled",
        actor=actor,
        now=now,
        details={
            "scheduled_for": scheduled_for.isoformat(),
            "carrier": carrier,
            "address": delivery.address,
        },
    )
    return delivery


def dispatch_delivery(
    session: Session, sale: Sale, *, tracking_number: str | None, actor: Actor, now: datetime
) -> Delivery:
    """The carrier has picked the car up: it is on its way to the customer."""
    delivery = _scheduled(session, sale, "in_transit")
    DELIVERY.check(delivery.state, "in_transit")
    delivery.state = "in_transit"
    delivery.tracking_number = tracking_number
    delivery.dispatched_at = now
    delivery.updated_at = now
    _record(session, delivery, "delivery.dispatched", "scheduled", actor=actor)
    transition_order(
        session,
        sale,
        "in_transit",
        actor=actor,
        now=now,
        details={
            "carrier": delivery.carrier,
            "tracking_number": tracking_number,
            "eta": delivery.scheduled_for.isoformat(),
            "address": delivery.address,
        },
    )
    return delivery


def complete_delivery(session: Session, sale: Sale, *, actor: Actor, now: datetime) -> Delivery:
    """The car is handed over: the order waits for the phone to be paired with it, and the car
    gets a configuration with the plan's features, which become its entitlements, on from
    now for the service period."""
    from caas.ota.service import request_configuration
    from caas.store.entitlements import grant_plan

    delivery = _scheduled(session, sale, "delivered")
    DELIVERY.check(delivery.state, "delivered")
    vehicle = vehicle_for_sale(session, sale.id)
    if vehicle is None:
        raise Conflict("the car of this order has no record", code="delivery.no_vehicle")
    delivery.state = "delivered"
    delivery.delivered_at = now
    delivery.updated_at = now
    vehicle.delivered_at = now
    if vehicle.owner_customer_id is None:
        vehicle.owner_customer_id = sale.customer_id
    _record(session, delivery, "delivery.delivered", "in_transit", actor=actor)
    record(
        session,
        at=now,
        actor=actor,
        subject_type="vehicle",
        subject_id=vehicle.id,
        event="car.delivered",
        details={"address": delivery.address, "sale_id": sale.id},
    )
    grant_plan(session, vehicle, sale, actor=actor, now=now)
    request_configuration(session, vehicle, reason="delivered", actor=actor, now=now)
    transition_order(
        session,
        sale,
        "delivered",
        actor=actor,
        now=now,
        details={"delivered_at": now.isoformat(), "address": delivery.address},
    )
    return delivery
