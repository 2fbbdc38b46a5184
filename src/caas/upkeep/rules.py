"""The words of upkeep: needs, the order's life, what a maintenance plan covers."""

from __future__ import annotations

from caas.core.state_machine import StateMachine

NEEDS = ("service", "washer_fluid", "adblue", "tyre_tread", "brake_pads", "battery_12v")

OPEN_STATES = ("proposed", "confirmed", "parts_reserved")

ORDER = StateMachine(
    "service_order",
    {
        "proposed": ("confirmed", "cancelled"),
        "confirmed": ("parts_reserved", "cancelled"),
        "parts_reserved": ("done", "cancelled"),
    },
)

# What a maintenance plan included in the car's sale pays for: the periodic service and the
# fluids topped up at it. Wear parts (tyres, pads, the 12 V battery) are the customer's.
PLAN_COVERS = frozenset({"service", "washer_fluid", "adblue"})

# Minutes a need takes at a workshop that has not said otherwise.
DEFAULT_SLOT_MINUTES = {
    "service": 120,
    "washer_fluid": 30,
    "adblue": 30,
    "tyre_tread": 90,
    "brake_pads": 90,
    "battery_12v": 60,
}

# How many free slots a proposal offers, and how far ahead the calendar is searched.
OFFERED_SLOTS = 5
SEARCH_DAYS = 28

# A proposal the customer has not answered is reminded of once, this long after it was made.
REMIND_AFTER_HOURS = 48

# A proposal's first slot is at least this far ahead: the workshop needs time to prepare.
LEAD_HOURS = 2
