"""Shapes of the delivery API: scheduling, dispatch and the delivery's state."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DeliveryCreate(BaseModel):
    """When and by whom the registered car is taken to the customer's address."""

    model_config = ConfigDict(extra="forbid")

    scheduled_for: date = Field(
        description="Day of delivery at the customer's address: today (UTC) or later, at most "
        "180 days ahead",
        examples=["2026-02-02"],
    )
    carrier: str = Field(
        min_length=2, max_length=80, description="Transport company", examples=["TransAuto Iberia"]
    )

    @field_validator("carrier")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = " ".join(value.split())
        if len(value) < 2:
            raise ValueError("name the carrier")
        return value


class DeliveryDispatch(BaseModel):
    """The carrier has picked the car up."""

    model_config = ConfigDict(extra="forbid")

    tracking_number: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{2,59}$",
        description="The carrier's tracking number, when it gives one",
        examples=["TAI-2026-004211"],
    )


class AddressRead(BaseModel):
    """Where the car is delivered."""

    recipient: str = Field(description="The customer's full name", examples=["Ana García López"])
    street: str = Field(description="Street, number, floor and door", examples=["Calle Mayor 1"])
    postal_code: str = Field(description="Postal code", examples=["28013"])
    city: str = Field(description="Town or city", examples=["Madrid"])
    country: str = Field(description="ISO 3166-1 alpha-2", examples=["ES"])


class DeliveryRead(BaseModel):
    """The transport of an order's car to the customer, and where it stands."""

    sale_id: int = Field(description="Database id of the order", examples=[1])
    state: Literal["scheduled", "in_transit", "delivered"] = Field(
        description="scheduled: booked with the carrier; in_transit: picked up; delivered: "
        "handed over to the customer"
    )
    order_state: str = Field(description="The order's state (machine name)", examples=["delivered"])
    order_state_label: str = Field(
        description="The order's state as people read it",
        examples=["Delivered: waiting for the phone to be paired"],
    )
    scheduled_for: date = Field(description="Day of delivery", examples=["2026-02-02"])
    carrier: str = Field(description="Transport company", examples=["TransAuto Iberia"])
    tracking_number: str | None = Field(
        description="The carrier's tracking number, when it gave one", examples=["TAI-2026-004211"]
    )
    address: AddressRead = Field(description="Where the car goes, as it was when scheduled")
    scheduled_at: datetime = Field(description="When the delivery was booked, with UTC offset")
    dispatched_at: datetime | None = Field(
        description="When the carrier picked the car up, with UTC offset; null until then"
    )
    delivered_at: datetime | None = Field(
        description="When the car was handed over, with UTC offset; null until then"
    )
