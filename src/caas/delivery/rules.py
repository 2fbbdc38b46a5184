"""The delivery's states and the rule for a delivery date: pure rules, no database."""

from __future__ import annotations

from datetime import date, timedelta

from caas.core.errors import InvalidInput
from caas.core.state_machine import StateMachine

DELIVERY = StateMachine(
    "delivery",
    {"scheduled": {"in_transit"}, "in_transit": {"delivered"}, "delivered": set()},
)

# A carrier books transport at most this far ahead.
LONGEST_LEAD = timedelta(days=180)


def check_delivery_date(scheduled_for: date, *, today: date) -> None:
    """A delivery is scheduled for today or a later day, within the carrier's booking horizon."""
    if scheduled_for < today:
        raise InvalidInput(
            f"the delivery date {scheduled_for.isoformat()} is in the past",
            field="scheduled_for",
            code="delivery.date_in_past",
        )
    if scheduled_for > today + LONGEST_LEAD:
        raise InvalidInput(
            f"a delivery can be booked at most {LONGEST_LEAD.days} days ahead",
            field="scheduled_for",
            code="delivery.date_too_far",
        )
