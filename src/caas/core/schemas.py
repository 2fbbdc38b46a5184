"""Shapes shared by every domain's API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from caas.core.money import Money


class MoneyRead(BaseModel):
    amount_minor: int = Field(description="Integer minor units (cents)", examples=[3450000])
    currency: str = Field(description="ISO 4217", examples=["EUR"])
    formatted: str = Field(
        description="For display, in the reader's locale", examples=["€34,500.00"]
    )

    @classmethod
    def of(cls, money: Money, locale: str = "en") -> MoneyRead:
        return cls(
            amount_minor=money.amount_minor, currency=money.currency, formatted=money.format(locale)
        )
