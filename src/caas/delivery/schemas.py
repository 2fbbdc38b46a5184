"""Shapes of the delivery API: scheduling, dispatch and the delivery's state."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DeliveryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scheduled_for: date = Field(
        description="Day of delivery at the customer's address: today or later",
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
    model_config = ConfigDict(extra="forbid")

    tracking_number: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{2,59}$",
        description="The carrier's tracking number, when it gives one",
        examples=["TAI-2026-004211"],
    )


class AddressRead(BaseModel):
    recipient: str = Field(examples=["Ana García López"])
    street: str = Field(examples=["Calle Mayor 1"])
    postal_code: str = Field(examples=["28013"])
    city: str = Field(examples=["Madrid"])
    country: str = Field(examples=["ES"])


class DeliveryRead(BaseModel):
    sale_id: int
    state: Literal["scheduled", "in_transit", "delivered"]
    order_state: str = Field(examples=["delivered"])
    order_state_label: str = Field(examples=["Delivered: waiting for the phone to be paired"])
    scheduled_for: date
    carrier: str
    tracking_number: str | None
    address: AddressRead = Field(description="Where the car goes, as it was when scheduled")
    scheduled_at: datetime
    dispatched_at: datetime | None
    delivered_at: datetime | None
