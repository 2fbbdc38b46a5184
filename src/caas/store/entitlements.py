"""Entitlements over time: what a car is entitled to run, the one input of its configuration.

`car_entitlements` is what `caas.ota.service.effective_configuration` reads.

TODO(issue 5, entitlements part): today it still derives the dealer's plan from the sale;
it will read the `entitlements` table (plan entitlements written at delivery).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from caas.ota.rules import Entitlement as Window
from caas.ota.rules import plan_entitlements
from caas.sales import service as sales
from caas.sales.models import Sale
from caas.vehicles.models import Vehicle


def car_entitlements(session: Session, vehicle: Vehicle) -> list[Window]:
    """Every window in which the car must run a feature (enabled entitlements that count)."""
    if vehicle.sale_id is None:
        return []
    sale = session.get_one(Sale, vehicle.sale_id)
    codes = [feature.code for feature in sales.sale_features(session, sale.id)]
    return plan_entitlements(
        codes, delivered_at=vehicle.delivered_at, service_period_months=sale.service_period_months
    )
