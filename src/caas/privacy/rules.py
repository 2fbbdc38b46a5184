"""What a customer can consent to, and what each consent lets the platform keep."""

from __future__ import annotations

from typing import Final, Literal, get_args

# Off until the customer turns it on; withdrawing it stops the storing from then on.
Purpose = Literal["location_history", "driving_style"]
PURPOSES: Final[tuple[Purpose, ...]] = get_args(Purpose)

LOCATION_HISTORY: Final = "location_history"
DRIVING_STYLE: Final = "driving_style"

# What each purpose keeps, for the customer and the API's readers.
DESCRIPTIONS: Final[dict[Purpose, str]] = {
    "location_history": "Keep where the car has been (its position in every telemetry sample)",
    "driving_style": "Keep how the car is driven (speed and the car's further readings)",
}
