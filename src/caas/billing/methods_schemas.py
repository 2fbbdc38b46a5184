"""Shapes of the payment methods API: the customer's saved cards and adding one."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from caas.billing.models import PaymentMethod


class PaymentMethodCreate(BaseModel):
    """Save a card the browser tokenised at the payment provider (`POST /v1/tokens`)."""

    model_config = ConfigDict(extra="forbid")

    card_token: str = Field(
        min_length=5,
        max_length=80,
        pattern=r"^tok_[A-Za-z0-9]+$",
        description="Reusable token from the provider: the card itself never reaches this "
        "platform; the provider must know it",
        examples=["tok_3f9c2a7e5b1d4c8a"],
    )


class PaymentMethodRead(BaseModel):
    """One of the customer's saved cards, as the provider described it."""

    id: int = Field(description="Database id of the saved card", examples=[5])
    brand: str = Field(description="Card brand: visa, mastercard, amex or card", examples=["visa"])
    last4: str = Field(description="Last four digits of the card number", examples=["4242"])
    exp_month: int | None = Field(description="Expiry month, 1 to 12", examples=[12])
    exp_year: int | None = Field(description="Expiry year, four digits", examples=[2030])
    is_default: bool = Field(
        description="The card that pays renewals, planned options and monthly use"
    )
    created_at: datetime = Field(description="When it was saved, with UTC offset")

    @classmethod
    def of(cls, method: PaymentMethod) -> PaymentMethodRead:
        return cls.model_validate(method, from_attributes=True)
