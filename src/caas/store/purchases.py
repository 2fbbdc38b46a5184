"""Purchases: quote, authorise, deliver over the air, capture on `applied`, void on refusal.

TODO(issue 5, purchase part): the flow itself.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from caas.ota.models import ConfigurationVersion
from caas.vehicles.models import Vehicle


def configuration_answered(
    session: Session, vehicle: Vehicle, version: ConfigurationVersion, *, now: datetime
) -> None:
    """The car answered `version` (its state is now applied, rejected or deferred): settle the
    purchases it carries (capture on applied; void or refund on rejected). Called by
    `caas.ota.service.record_report` in its transaction; must stay fast (the hot path)."""
