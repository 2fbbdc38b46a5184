"""What a stage event does to an order: pure rules, no database."""

from __future__ import annotations

from typing import Literal

from caas.sales.rules import FACTORY_STAGES, ORDER

# States an order reaches after the car left the factory's hands for good.
AFTER_MANUFACTURING = frozenset(
    {
        "registering",
        "registration_rejected",
        "registered",
        "delivery_scheduled",
        "in_transit",
        "delivered",
    }
)

StageDecision = Literal["apply", "stale", "refuse"]


def stage_decision(order_state: str, stage: str) -> StageDecision:
    """Whether a (new) stage event moves the order, is already behind it, or cannot apply.

    `apply`: the order machine allows the move (forward, possibly skipping stages).
    `stale`: the order already is at this stage or further; the event changes nothing.
    `refuse`: the order is not in production (no deposit yet, or cancelled).
    """
    if ORDER.allows(order_state, stage):
        return "apply"
    if order_state in AFTER_MANUFACTURING:
        return "stale"
    if order_state in FACTORY_STAGES and FACTORY_STAGES.index(order_state) >= FACTORY_STAGES.index(
        stage
    ):
        return "stale"
    return "refuse"
