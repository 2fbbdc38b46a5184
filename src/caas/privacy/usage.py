"""Product improvement: how the fleet uses its options, read only from the cars whose owners
consent to it, and without naming anyone.

The consent is read with each query (joined in SQL, so withdrawing it counts from the next
read on). A car counts while its current owner's `product_improvement` consent is in force;
a car without an owner, or whose owner never consented, is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from caas.privacy.models import Consent
from caas.privacy.rules import PRODUCT_IMPROVEMENT
from caas.vehicles.models import FeatureUsage, Vehicle


@dataclass(frozen=True, slots=True)
class FeatureUse:
    """One feature's use in a period across the consenting cars."""

    feature: str
    unit: str
    cars: int
    quantity: Decimal


def fleet_usage(session: Session, *, start: datetime, end: datetime) -> list[FeatureUse]:
    """Use of each metered feature in [start, end) by the cars whose owners consent to
    product improvement; one statement."""
    consenting = and_(
        Consent.customer_id == Vehicle.owner_customer_id,
        Consent.purpose == PRODUCT_IMPROVEMENT,
        Consent.granted.is_(True),
    )
    rows = session.execute(
        select(
            FeatureUsage.feature,
            FeatureUsage.unit,
            func.count(func.distinct(Vehicle.id)),
            func.sum(FeatureUsage.quantity),
        )
        .join(Vehicle, Vehicle.vin == FeatureUsage.vin)
        .join(Consent, consenting)
        .where(FeatureUsage.at >= start, FeatureUsage.at < end)
        .group_by(FeatureUsage.feature, FeatureUsage.unit)
        .order_by(FeatureUsage.feature, FeatureUsage.unit)
    ).all()
    return [
        FeatureUse(
            feature=feature,
            unit=unit,
            cars=cars,
            quantity=Decimal(repr(total))
            .quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
            .normalize(),
        )
        for feature, unit, cars, total in rows
    ]
