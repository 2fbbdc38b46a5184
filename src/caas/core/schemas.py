"""Shapes shared by every domain's API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from caas.core.money import Money


class MoneyRead(BaseModel):
    """An amount of money: exact integer minor units, and the same amount for display."""

    amount_minor: int = Field(
        description="Integer minor units (cents): 3450000 is 34,500.00", examples=[3450000]
    )
    currency: str = Field(description="ISO 4217 currency code", examples=["EUR"])
    formatted: str = Field(
        description="For display only, in the reader's language (a country's own language in "
        "the public catalog)",
        examples=["€34,500.00"],
    )

    @classmethod
    def of(cls, money: Money, locale: str = "en") -> MoneyRead:
        return cls(
            amount_minor=money.amount_minor, currency=money.currency, formatted=money.format(locale)
        )
