"""Placing the order with the factory, and applying the manufacturing stages it reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import Dealership
from caas.catalog import service as catalog
from caas.core.errors import Conflict, NotFound
from caas.core.history import Actor
from caas.core.outbox import enqueue
from caas.factory.models import FactoryEvent
from caas.factory.rules import stage_decision
from caas.iot import service as iot
from caas.protocol.factory import FactoryOrderAck, StageEvent
from caas.sales import service as sales
from caas.sales.models import Sale
from caas.vehicles import service as vehicles

log = structlog.get_logger(__name__)

PLACE_ORDER_TOPIC = "factory.place_order"
PROVISION_CAR_TOPIC = "factory.provision_car"
FACTORY = Actor(kind="factory", label="factory")

EventOutcome = Literal["applied", "duplicate", "ignored"]


def factory_order(session: Session, sale: Sale) -> dict[str, Any]:
    """The order for the factory as the sale stands now (the relay adds the callback)."""
    platform = catalog.get_platform(session, sale.platform_id)
    dealership = session.get_one(Dealership, sale.dealership_id)
    hardware = sorted(
        feature.code for feature in sales.sale_features(session, sale.id) if feature.needs_hardware
    )
    return {
        "order_id": sale.number,
        "platform": platform.code,
        "hardware_features": hardware,
        "software_version": platform.software_version,
        "destination": {
            "dealership_code": dealership.code,
            "name": dealership.name,
            "address": dealership.address,
            "city": dealership.city,
            "country": dealership.country,
        },
    }


def place_factory_order(session: Session, sale: Sale, *, now: datetime) -> None:
    """Queue the order for the factory in the caller's transaction, once per sale.

    The relay sends it after commit and retries with backoff for as long as the factory is
    down; the order id is the idempotency key, so the factory never builds it twice.
    """
    enqueue(
        session,
        topic=PLACE_ORDER_TOPIC,
        payload={"sale_id": sale.id, "order": factory_order(session, sale)},
        dedupe_key=f"factory.order:{sale.id}",
        now=now,
    )


def order_acknowledged(
    session: Session, *, sale_id: int, ack: FactoryOrderAck, now: datetime
) -> Sale:
    """The factory has the order: keep its reference; the order is `ordered` unless a stage
    event already moved it further."""
    sale = sales.lock_sale(session, sale_id)
    sale.factory_order_ref = ack.factory_reference
    sale.updated_at = now
    if sale.state == "waiting_for_factory":
        sales.transition_order(
            session,
            sale,
            "ordered",
            actor=FACTORY,
            now=now,
            details={"factory_reference": ack.factory_reference},
        )
    return sale


def receive_stage_event(session: Session, event: StageEvent, *, now: datetime) -> EventOutcome:
    """Apply a (verified) stage event once: duplicates and late events change nothing.

    `duplicate`: this event id was received before. `ignored`: the event is older than the last
    one applied to the order (by sequence) or than the order's state; it is kept all the same.
    `applied`: the order moved to the stage, and at production the car's record was created.
    """
    sale_id = session.scalar(select(Sale.id).where(Sale.number == event.order_id))
    if sale_id is None:
        raise NotFound("no order with this id", code="factory.order_unknown", field="order_id")
    # Under the sale's lock, events of one order apply one after the other.
    sale = sales.lock_sale(session, sale_id)
    seen = session.scalar(select(FactoryEvent.id).where(FactoryEvent.event_id == event.event_id))
    if seen is not None:
        return "duplicate"
    if event.sequence <= sale.last_factory_sequence:
        _keep(session, sale, event, outcome="ignored", now=now)
        log.info("factory.event_late", order_id=event.order_id, sequence=event.sequence)
        return "ignored"
    decision = stage_decision(sale.state, event.stage)
    if decision == "refuse":
        raise Conflict(
            f"order {sale.number} is not in production (it is {sale.state})",
            code="factory.order_not_in_production",
            state=sale.state,
        )
    sale.last_factory_sequence = event.sequence
    if sale.factory_order_ref is None:
        sale.factory_order_ref = event.factory_reference
    details: dict[str, Any] = {
        "stage": event.stage,
        "sequence": event.sequence,
        "event_id": str(event.event_id),
        "factory_reference": event.factory_reference,
    }
    if event.vin is not None and event.public_key is not None:
        _car_born(session, sale, vin=event.vin, public_key=event.public_key, event=event, now=now)
        details["vin"] = event.vin
    if decision == "apply":
        sales.transition_order(session, sale, event.stage, actor=FACTORY, now=now, details=details)
    else:
        sale.updated_at = now
    _keep(session, sale, event, outcome="applied" if decision == "apply" else "ignored", now=now)
    return "applied" if decision == "apply" else "ignored"


def _car_born(
    session: Session, sale: Sale, *, vin: str, public_key: str, event: StageEvent, now: datetime
) -> None:
    """The car's record, the first time an event carries it (normally at production)."""
    existing = vehicles.vehicle_for_sale(session, sale.id)
    if existing is not None:
        if existing.vin != vin:
            log.warning("factory.vin_changed", order_id=sale.number, kept=existing.vin, sent=vin)
        return
    platform = catalog.get_platform(session, sale.platform_id)
    vehicles.record_birth(
        session,
        vin=vin,
        public_key=public_key,
        sale_id=sale.id,
        platform_id=platform.id,
        owner_customer_id=sale.customer_id,
        software_version=platform.software_version,
        built_at=event.occurred_at,
        actor=FACTORY,
        now=now,
    )
    queue_provisioning(session, vin=vin, now=now)


def queue_provisioning(session: Session, *, vin: str, now: datetime) -> None:
    """The born car's provisioning bundle goes to the factory's end of line (after commit, by
    the relay, retried while the factory is down): the password issued at birth stays sealed
    until then (`caas.iot.service.seal_for_factory`)."""
    iot.seal_for_factory(session, vin=vin, now=now)
    enqueue(
        session,
        topic=PROVISION_CAR_TOPIC,
        payload={"vin": vin},
        dedupe_key=f"{PROVISION_CAR_TOPIC}:{vin}",
        now=now,
    )


def _keep(session: Session, sale: Sale, event: StageEvent, *, outcome: str, now: datetime) -> None:
    session.add(
        FactoryEvent(
            event_id=event.event_id,
            sale_id=sale.id,
            sequence=event.sequence,
            stage=event.stage,
            occurred_at=event.occurred_at,
            received_at=now,
            outcome=outcome,
            payload=event.model_dump(mode="json"),
        )
    )


def factory_events(session: Session, sale_id: int) -> list[FactoryEvent]:
    """Every stage event received for a sale, in the factory's order."""
    return list(
        session.scalars(
            select(FactoryEvent)
            .where(FactoryEvent.sale_id == sale_id)
            .order_by(FactoryEvent.sequence, FactoryEvent.id)
        )
    )
