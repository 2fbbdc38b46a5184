"""The order's state machine and the quote arithmetic: pure rules, no database."""

from __future__ import annotations

from dataclasses import dataclass

from caas.core.money import Money, percent_of
from caas.core.state_machine import StateMachine

# The manufacturing stages the factory reports, in order.
FACTORY_STAGES = (
    "accepted",
    "scheduled",
    "body",
    "paint",
    "assembly",
    "quality_check",
    "shipped",
    "at_dealer",
)

ORDER = StateMachine(
    "order",
    {
        "awaiting_deposit": {"waiting_for_factory", "cancelled"},
        # The deposit is captured and the order queued for the factory (retried while it is down).
        "waiting_for_factory": {"ordered", *FACTORY_STAGES},
        "ordered": set(FACTORY_STAGES),
        # A stage can only move forward; a lost event must not block the later ones.
        **{
            stage: set(FACTORY_STAGES[index + 1 :])
            for index, stage in enumerate(FACTORY_STAGES[:-1])
        },
        "at_dealer": {"registering"},
        "registering": {"registered", "registration_rejected"},
        "registration_rejected": {"registering"},
        "registered": {"delivery_scheduled"},
        "delivery_scheduled": {"in_transit"},
        "in_transit": {"delivered"},
        "delivered": set(),
        "cancelled": set(),
    },
)

# What the customer and the dealer read for each state.
STATE_LABELS = {
    "awaiting_deposit": "Waiting for the deposit",
    "waiting_for_factory": "Waiting for the factory",
    "ordered": "Ordered from the factory",
    "accepted": "Accepted by the factory",
    "scheduled": "Scheduled for production",
    "body": "Body shop",
    "paint": "Paint shop",
    "assembly": "Assembly",
    "quality_check": "Quality check",
    "shipped": "Shipped",
    "at_dealer": "At the dealership: waiting for the final payment",
    "registering": "Being registered",
    "registration_rejected": "Registration rejected",
    "registered": "Registered",
    "delivery_scheduled": "Delivery scheduled",
    "in_transit": "On its way to you",
    "delivered": "Delivered: waiting for the phone to be paired",
    "cancelled": "Cancelled",
}


@dataclass(frozen=True)
class QuoteLine:
    description: str
    net: Money


@dataclass(frozen=True)
class Quote:
    lines: tuple[QuoteLine, ...]
    vat_rate_bp: int
    net: Money
    vat: Money
    total: Money
    deposit: Money


def quote(
    lines: list[QuoteLine], *, currency: str, vat_rate_bp: int, deposit_share_bp: int
) -> Quote:
    """Net, VAT (rounded half up on each line) and total; the deposit is a share of the total."""
    net = sum((line.net.amount_minor for line in lines), 0)
    vat = sum((percent_of(line.net.amount_minor, vat_rate_bp) for line in lines), 0)
    total = net + vat
    return Quote(
        lines=tuple(lines),
        vat_rate_bp=vat_rate_bp,
        net=Money(net, currency),
        vat=Money(vat, currency),
        total=Money(total, currency),
        deposit=Money(percent_of(total, deposit_share_bp), currency),
    )
