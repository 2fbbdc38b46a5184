"""The registration's own states, and which order states still let a dealer correct the data."""

from __future__ import annotations

from caas.core.state_machine import StateMachine

# One registration per sale; a refused one is corrected and submitted again.
REGISTRATION = StateMachine(
    "registration",
    {
        "submitted": {"registered", "rejected"},
        "rejected": {"submitted"},
        "registered": set(),
    },
)

# Once the authority has registered the car, the holder's data on the registration certificate
# are the registry's: correcting them here would make the two disagree.
CORRECTABLE_ORDER_STATES = frozenset(
    {
        "awaiting_deposit",
        "waiting_for_factory",
        "ordered",
        "accepted",
        "scheduled",
        "body",
        "paint",
        "assembly",
        "quality_check",
        "shipped",
        "at_dealer",
        "registering",
        "registration_rejected",
    }
)
