"""Which workshop looks after a customer's car: the preferred one, else the nearest ones."""

from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.sales.models import Customer
from caas.upkeep.consent import preference_of
from caas.upkeep.models import Workshop, WorkshopStaff


def nearest(session: Session, customer: Customer, *, limit: int = 3) -> list[Workshop]:
    """Workshops of the customer's country, the longest shared postal-code prefix first,
    then by distance to the workshop sharing the most of it (so a customer of 28xxx is sent
    to Madrid's workshops, then to the closest of the others)."""
    candidates = list(
        session.scalars(
            select(Workshop).where(Workshop.country == customer.country).order_by(Workshop.id)
        )
    )
    if not candidates:
        return []

    def shared(workshop: Workshop) -> int:
        count = 0
        for a, b in zip(workshop.postal_code, customer.postal_code, strict=False):
            if a != b:
                break
            count += 1
        return count

    anchor = max(candidates, key=shared)
    candidates.sort(key=lambda w: (-shared(w), distance_km(anchor, w), w.id))
    return candidates[:limit]


def for_customer(session: Session, customer: Customer) -> list[Workshop]:
    """The preferred workshop first (when set), then the nearest others."""
    chosen: list[Workshop] = []
    preference = preference_of(session, customer.id)
    if preference is not None and preference.preferred_workshop_id is not None:
        chosen.append(session.get_one(Workshop, preference.preferred_workshop_id))
    for workshop in nearest(session, customer):
        if workshop not in chosen:
            chosen.append(workshop)
    return chosen


def distance_km(a: Workshop, b: Workshop) -> float:
    """Great-circle distance between two workshops (haversine)."""
    lat1, lon1 = math.radians(a.latitude_e6 / 1e6), math.radians(a.longitude_e6 / 1e6)
    lat2, lon2 = math.radians(b.latitude_e6 / 1e6), math.radians(b.longitude_e6 / 1e6)
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 6371.0 * 2 * math.asin(math.sqrt(h))


def workshop_of_staff(session: Session, user_id: int) -> Workshop | None:
    """The workshop a workshop user works at (None: not attached to one)."""
    return session.scalars(
        select(Workshop)
        .join(WorkshopStaff, WorkshopStaff.workshop_id == Workshop.id)
        .where(WorkshopStaff.user_id == user_id)
    ).first()
