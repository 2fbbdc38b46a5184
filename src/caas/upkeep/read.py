"""Service orders as the API and the pages show them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from caas.upkeep import orders
from caas.upkeep.models import ServiceOrder, Workshop
from caas.upkeep.schemas import QuoteLineRead, ServiceOrderRead, SlotRead
from caas.vehicles.models import Vehicle


def order_read(session: Session, order: ServiceOrder, *, now: datetime) -> ServiceOrderRead:
    workshop = session.get(Workshop, order.workshop_id) if order.workshop_id else None
    vehicle = session.get_one(Vehicle, order.vehicle_id)
    slot = None
    if order.slot_start is not None and order.slot_end is not None and order.bay is not None:
        slot = SlotRead(start=order.slot_start, end=order.slot_end, bay=order.bay)
    return ServiceOrderRead(
        id=order.id,
        vin=vehicle.vin,
        need=order.need,
        state=order.state,
        workshop_id=order.workshop_id,
        workshop=workshop.name if workshop else None,
        slot=slot,
        currency=order.currency,
        lines=[QuoteLineRead.model_validate(line) for line in order.lines],
        net_minor=order.net_minor,
        vat_minor=order.vat_minor,
        gross_minor=order.gross_minor,
        included_in_plan=order.included_in_plan,
        auto_confirmed=order.auto_confirmed,
        offered_slots=[
            SlotRead(start=s.start, end=s.end, bay=s.bay)
            for s in orders.offered_slots(session, order, now=now)
        ],
        payment_id=order.payment_id,
        invoice_id=order.invoice_id,
        created_at=order.created_at,
        updated_at=order.updated_at,
    )
