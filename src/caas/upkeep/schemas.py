"""Shapes of the upkeep API: service orders, their slots, the customer's choices."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class SlotRead(BaseModel):
    start: datetime = Field(description="When the work starts, with UTC offset")
    end: datetime = Field(description="When the car is ready, with UTC offset")
    bay: int = Field(description="The workshop bay that is free then", examples=[1])


class QuoteLineRead(BaseModel):
    part: str = Field(description="Catalog code of the part or labour", examples=["tyre"])
    kind: str = Field(description="part or labour", examples=["part"])
    description: str = Field(description="What it is", examples=["Tyre 205/55 R16"])
    quantity: int = Field(description="How many", examples=[4])
    unit_net_minor: int = Field(description="Net price of one, minor units", examples=[8900])
    net_minor: int = Field(description="Net of the line, minor units", examples=[35600])
    vat_minor: int = Field(description="VAT of the line, minor units", examples=[7476])


class ServiceOrderRead(BaseModel):
    """A need of a car fixed at a workshop, with its quote and its slot."""

    id: int = Field(description="Order id", examples=[12])
    vin: str = Field(description="The car's VIN", examples=["1M8GDM9AXKP042788"])
    need: str = Field(
        description="service, washer_fluid, adblue, tyre_tread, brake_pads or battery_12v",
        examples=["tyre_tread"],
    )
    state: str = Field(
        description="proposed, confirmed, parts_reserved, done or cancelled", examples=["proposed"]
    )
    workshop_id: int | None = Field(description="Workshop that does the work", examples=[1])
    workshop: str | None = Field(description="Its name", examples=["Taller Norte"])
    slot: SlotRead | None = Field(description="The booked slot, once confirmed")
    currency: str = Field(description="ISO 4217 currency of the quote", examples=["EUR"])
    lines: list[QuoteLineRead] = Field(description="The quote, line by line")
    net_minor: int = Field(description="Net total, minor units", examples=[41600])
    vat_minor: int = Field(description="VAT total, minor units", examples=[8736])
    gross_minor: int = Field(description="What is charged when done, minor units", examples=[50336])
    included_in_plan: bool = Field(description="Covered by the maintenance plan: nothing charged")
    auto_confirmed: bool = Field(description="Placed under the customer's standing consent")
    offered_slots: list[SlotRead] = Field(
        description="Free slots to confirm it in (while proposed)"
    )
    payment_id: int | None = Field(description="The payment of the work, once done", examples=[7])
    invoice_id: int | None = Field(description="Its invoice, once captured", examples=[9])
    created_at: datetime = Field(description="When it was proposed")
    updated_at: datetime = Field(description="Its last change")


class ConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slot_start: datetime = Field(
        description="Start of one of the offered slots, with UTC offset",
        examples=["2026-01-16T08:00:00+00:00"],
    )


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        default="", max_length=300, description="Why, for the other side", examples=["Sold the car"]
    )


class DoneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    odometer_km: int = Field(
        ge=0, le=2_000_000, description="The car's odometer at the workshop", examples=[21500]
    )


class PreferencesWrite(BaseModel):
    """The customer's upkeep choices. Standing consent is off by default."""

    model_config = ConfigDict(extra="forbid")

    auto_order: bool = Field(
        description="Order automatically, without asking, when the quote is within the limit"
    )
    auto_limit_minor: int = Field(
        ge=0,
        le=1_000_000,
        description="Highest quote (gross, minor units of your currency) placed without asking",
        examples=[15000],
    )
    preferred_workshop_id: int | None = Field(
        default=None, description="Your official workshop (None: the nearest)", examples=[1]
    )


class PreferencesRead(PreferencesWrite):
    currency: str = Field(description="Currency of the limit", examples=["EUR"])


class WorkshopRead(BaseModel):
    id: int = Field(description="Workshop id", examples=[1])
    name: str = Field(description="Its name", examples=["Taller Norte"])
    city: str = Field(description="City", examples=["Madrid"])
    address: str = Field(description="Street address", examples=["Calle de Bravo Murillo 300"])
    postal_code: str = Field(description="Postal code", examples=["28020"])
