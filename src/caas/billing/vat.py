"""The VAT rate in force in a country on a given day, from the `vat_rates` table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing.rules import issue_date
from caas.catalog.models import VatRate
from caas.core.errors import Conflict


def rate_at(session: Session, country: str, at: datetime) -> int:
    """The rate (basis points) of the last row valid from on or before the day `at` falls on
    in the country's zone: a rate change applies from its day, midnight local time."""
    day = issue_date(at, country)
    rate = session.scalars(
        select(VatRate.rate_bp)
        .where(VatRate.country == country, VatRate.valid_from <= day)
        .order_by(VatRate.valid_from.desc())
        .limit(1)
    ).first()
    if rate is None:
        raise Conflict(f"no VAT rate for {country} on {day}", code="billing.no_vat_rate")
    return rate
