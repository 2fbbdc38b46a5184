"""What a customer can consent to, what each consent lets the platform do with their data, and
how long the law keeps what an erasure cannot remove."""

from __future__ import annotations

from typing import Final, Literal, get_args

# `service` is what running the service needs (odometer, software version, battery, online
# status, metered use for billing): always in force, shown as such, never withdrawn. The others
# are off until the customer turns them on; withdrawing one stops that use from then on.
Purpose = Literal[
    "service",
    "location_history",
    "driving_style",
    "product_improvement",
    "tailored_offers",
]
PURPOSES: Final[tuple[Purpose, ...]] = get_args(Purpose)

SERVICE: Final = "service"
LOCATION_HISTORY: Final = "location_history"
DRIVING_STYLE: Final = "driving_style"
PRODUCT_IMPROVEMENT: Final = "product_improvement"
TAILORED_OFFERS: Final = "tailored_offers"

# The purposes the customer chooses; `service` is not theirs to withdraw.
OPTIONAL_PURPOSES: Final[tuple[Purpose, ...]] = tuple(p for p in PURPOSES if p != SERVICE)

# What each purpose keeps or allows, for the customer and the API's readers.
DESCRIPTIONS: Final[dict[Purpose, str]] = {
    "service": "Run the service: odometer, software version, battery, online status and the "
    "metered use you are billed for (needed, always on)",
    "location_history": "Keep where the car has been (its position in every telemetry sample)",
    "driving_style": "Keep how the car is driven (speed and the car's further readings)",
    "product_improvement": "Let the maker use the car's usage, without your name, to improve "
    "its cars and options",
    "tailored_offers": "Suggest offers that suit how you actually use the car (read from your "
    "metered use, the days and km the car is driven and, with driving_style too, its motorway "
    "trips)",
}

# Invoices and the ledger outlive an erasure: tax law keeps them (Spain's Ley General
# Tributaria and Código de Comercio ask up to six years; the longest of our countries wins).
INVOICE_RETENTION_YEARS: Final = 10
RETENTION_NOTE: Final = (
    f"retained: legal obligation (invoices kept {INVOICE_RETENTION_YEARS} years)"
)
