"""What the car's screen says about its bookings: carried in the messages of its signed
configuration (`caas.ota.service.request_configuration` adds `car_messages`)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.sales.models import Customer
from caas.upkeep.models import ServiceOrder, Workshop
from caas.vehicles.models import Vehicle

_BOOKED = {
    "en": "{what} booked: {when} at {workshop}",
    "es": "{what} reservado: {when} en {workshop}",
}
_WHAT = {
    "en": {
        "service": "Service",
        "washer_fluid": "Washer fluid top-up",
        "adblue": "AdBlue top-up",
        "tyre_tread": "Tyre change",
        "brake_pads": "Brake pads",
        "battery_12v": "12 V battery",
    },
    "es": {
        "service": "Revisión",
        "washer_fluid": "Líquido limpiaparabrisas",
        "adblue": "AdBlue",
        "tyre_tread": "Cambio de neumáticos",
        "brake_pads": "Pastillas de freno",
        "battery_12v": "Batería 12 V",
    },
}


def booked_message(order: ServiceOrder, workshop: Workshop, language: str) -> str:
    """ "Service booked: Tue 12 Jan 09:00 at Taller Norte", on the workshop's clock."""
    lang = language if language in _BOOKED else "en"
    assert order.slot_start is not None
    local = order.slot_start.astimezone(ZoneInfo(workshop.timezone))
    when = format_datetime(local, "EEE d MMM HH:mm", locale=lang)
    return _BOOKED[lang].format(what=_WHAT[lang][order.need], when=when, workshop=workshop.name)


def car_messages(session: Session, vehicle: Vehicle, now: datetime) -> list[str]:
    """One line per booking of the car still to come, in its owner's language."""
    rows = session.execute(
        select(ServiceOrder, Workshop)
        .join(Workshop, Workshop.id == ServiceOrder.workshop_id)
        .where(
            ServiceOrder.vehicle_id == vehicle.id,
            ServiceOrder.state.in_(("confirmed", "parts_reserved")),
            ServiceOrder.slot_end > now,
        )
        .order_by(ServiceOrder.slot_start)
    ).all()
    if not rows:
        return []
    owner = session.get(Customer, vehicle.owner_customer_id) if vehicle.owner_customer_id else None
    language = owner.language if owner is not None else "en"
    return [booked_message(order, workshop, language) for order, workshop in rows]
