"""Shapes of the owner's options API: the car's options and switching one off or on."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from caas.store.entitlements import OwnedOption


class OptionUpdate(BaseModel):
    """Switch an owned option off or on (no charge; the car gets a new configuration)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(description="true: on; false: off until switched on again")


class OptionRead(BaseModel):
    """One of the car's options, current or to come."""

    entitlement_id: int = Field(
        description="Id of the entitlement (used to switch it)", examples=[42]
    )
    code: str = Field(description="The feature's code", examples=["power_boost"])
    source: str = Field(
        description="Where it comes from: `plan` (the dealer's plan), `trial`, `purchase` (a "
        "window), `subscription`, `permanent`, `metered` or `occurrence` (a planned or "
        "recurring window)",
        examples=["purchase"],
    )
    state: str = Field(
        description="`delivering` (paid, on its way to the car) or `active`",
        examples=["active"],
    )
    enabled: bool = Field(description="Switched on by the owner (false: off at their wish)")
    valid_from: datetime = Field(description="Start of its window, with UTC offset")
    valid_until: datetime | None = Field(
        description="End of its window, with UTC offset; null: no end (permanent, metered)"
    )
    purchase_id: int | None = Field(description="The purchase that bought it, if any")
    subscription_id: int | None = Field(description="The subscription it belongs to, if any")
    switchable: bool = Field(
        description="Whether the owner may switch it off and on now (not a trial, not still "
        "on its way to the car)"
    )

    @classmethod
    def of(cls, option: OwnedOption) -> OptionRead:
        return cls.model_validate(option, from_attributes=True)
