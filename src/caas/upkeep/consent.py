"""A customer's upkeep choices: the preferred workshop and the standing consent.

Off by default: a customer without a row, or with `auto_order` false, is asked about every
order. With it, an order whose quote (gross, in the customer's currency) is within the limit
is confirmed at once; an order included in the plan costs 0 and is always within it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.catalog.models import Country
from caas.core.errors import InvalidInput
from caas.core.history import Actor, record
from caas.sales.models import Customer
from caas.upkeep.models import ServiceOrder, UpkeepPreference, Workshop

# The highest standing limit a customer may give (10 000 in their currency).
MAX_LIMIT_MINOR = 1_000_000


def preference_of(session: Session, customer_id: int) -> UpkeepPreference | None:
    return session.get(UpkeepPreference, customer_id)


def covers(preference: UpkeepPreference | None, order: ServiceOrder) -> bool:
    """Whether the standing consent lets the platform confirm the order without asking."""
    if preference is None or not preference.auto_order:
        return False
    return preference.currency == order.currency and order.gross_minor <= (
        preference.auto_limit_minor
    )


def set_preferences(
    session: Session,
    *,
    customer: Customer,
    auto_order: bool,
    auto_limit_minor: int,
    preferred_workshop_id: int | None,
    actor: Actor,
    now: datetime,
) -> UpkeepPreference:
    """Keep the customer's choices; every change goes to their file's history."""
    if not 0 <= auto_limit_minor <= MAX_LIMIT_MINOR:
        raise InvalidInput(
            f"the limit must be between 0 and {MAX_LIMIT_MINOR} minor units",
            field="auto_limit_minor",
            code="upkeep.bad_limit",
        )
    if preferred_workshop_id is not None:
        workshop = session.get(Workshop, preferred_workshop_id)
        if workshop is None:
            raise InvalidInput(
                "no such workshop", field="preferred_workshop_id", code="upkeep.no_workshop"
            )
    currency = session.scalars(
        select(Country.currency).where(Country.code == customer.country)
    ).one()
    preference = session.scalars(
        select(UpkeepPreference)
        .where(UpkeepPreference.customer_id == customer.id)
        .with_for_update()
    ).first()
    before: dict[str, object] = {}
    if preference is None:
        preference = UpkeepPreference(customer_id=customer.id, currency=currency, updated_at=now)
        session.add(preference)
    else:
        before = _shown(preference)
    preference.auto_order = auto_order
    preference.auto_limit_minor = auto_limit_minor
    preference.preferred_workshop_id = preferred_workshop_id
    preference.currency = currency
    preference.updated_at = now
    session.flush()
    after = _shown(preference)
    if after != before:
        record(
            session,
            at=now,
            actor=actor,
            subject_type="customer",
            subject_id=customer.id,
            customer_id=customer.id,
            event="upkeep.preferences_changed",
            details={"before": before, "after": after},
        )
    return preference


def _shown(preference: UpkeepPreference) -> dict[str, object]:
    return {
        "auto_order": preference.auto_order,
        "auto_limit_minor": preference.auto_limit_minor,
        "currency": preference.currency,
        "preferred_workshop_id": preference.preferred_workshop_id,
    }
