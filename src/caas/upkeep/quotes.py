"""The quote of a need: the catalog's parts and labour at the workshop's country prices, VAT
of the customer's country; 0 ("included") when the customer's maintenance plan covers it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing import vat
from caas.core.errors import Conflict
from caas.core.money import percent_of
from caas.maintenance import service as maintenance
from caas.sales.models import Customer
from caas.upkeep import calendar, workshops
from caas.upkeep.models import Part, PartPrice
from caas.upkeep.rules import LEAD_HOURS, PLAN_COVERS
from caas.vehicles.models import Vehicle


@dataclass(frozen=True)
class Quote:
    workshop_id: int | None
    currency: str
    lines: list[dict[str, object]]
    net_minor: int
    vat_minor: int
    gross_minor: int
    included_in_plan: bool


def _workshop_with_room(
    session: Session, customer: Customer, need: str, at: datetime
) -> int | None:
    """The preferred workshop when it has a free slot for the need, else the nearest one that
    has; the preferred (or nearest) one anyway when none has."""
    places = workshops.for_customer(session, customer)
    after = at + timedelta(hours=LEAD_HOURS)
    for place in places:
        if calendar.free_slots(session, place, need, after=after, count=1):
            return place.id
    return places[0].id if places else None


def quote_for(session: Session, *, vehicle: Vehicle, need: str, at: datetime) -> Quote:
    assert vehicle.owner_customer_id is not None
    customer = session.get_one(Customer, vehicle.owner_customer_id)
    workshop_id = _workshop_with_room(session, customer, need, at)
    included = need in PLAN_COVERS and maintenance.included_in_plan(session, vehicle, at)
    rate = vat.rate_at(session, customer.country, at)
    rows = session.execute(
        select(Part, PartPrice)
        .join(PartPrice, PartPrice.part_id == Part.id)
        .where(Part.need == need, PartPrice.country == customer.country)
        .order_by(Part.kind.desc(), Part.id)
    ).all()
    if not rows:
        raise Conflict(
            f"no prices for {need} in {customer.country}", code="upkeep.no_prices", need=need
        )
    currency = rows[0][1].currency
    lines: list[dict[str, object]] = []
    for part, price in rows:
        unit = 0 if included else price.net_minor
        lines.append(
            {
                "part": part.code,
                "kind": part.kind,
                "description": part.name,
                "quantity": part.quantity,
                "unit_net_minor": unit,
                "net_minor": unit * part.quantity,
                "vat_rate_bp": rate,
                "vat_minor": percent_of(unit * part.quantity, rate),
            }
        )
    net = sum(int(str(line["net_minor"])) for line in lines)
    tax = sum(int(str(line["vat_minor"])) for line in lines)
    return Quote(
        workshop_id=workshop_id,
        currency=currency,
        lines=lines,
        net_minor=net,
        vat_minor=tax,
        gross_minor=net + tax,
        included_in_plan=included,
    )
