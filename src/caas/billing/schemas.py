"""Shapes of the billing API: paying an order, payments, invoices, the provider's webhook."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from caas.core.schemas import MoneyRead


class PaymentCreate(BaseModel):
    """Pay the deposit or the rest of an order with a card token from the payment provider."""

    kind: Literal["deposit", "final"] = Field(
        description="`deposit` while the order awaits it; `final` once the car is at the dealer"
    )
    card_token: str = Field(
        min_length=5,
        max_length=100,
        pattern=r"^tok_[A-Za-z0-9]+$",
        description="Token from the provider's `POST /v1/tokens`: the card itself never "
        "reaches this platform",
        examples=["tok_3f9c2a7e5b1d4c8a"],
    )


class PaymentRead(BaseModel):
    id: int
    sale_id: int | None
    kind: str = Field(examples=["deposit"])
    state: str = Field(
        description="pending, authorised, captured, failed, voided or refunded",
        examples=["captured"],
    )
    amount: MoneyRead
    refunded: MoneyRead
    card_brand: str | None = Field(examples=["visa"])
    card_last4: str | None = Field(examples=["4242"])
    failure_code: str | None = Field(
        description="Why it failed: card_declined, provider_error...", examples=[None]
    )
    failure_reason: str | None
    invoice_id: int | None = Field(description="The invoice, once the money is captured")
    invoice_number: str | None = Field(examples=["ES-2026-000001"])
    created_at: datetime
    captured_at: datetime | None


class PartyRead(BaseModel):
    name: str
    tax_id: str = Field(description="VAT number of the seller, national id of the buyer")
    address: str


class InvoiceLineRead(BaseModel):
    position: int
    description: str
    net: MoneyRead
    vat_rate_percent: str = Field(examples=["21.00"])
    vat: MoneyRead
    gross: MoneyRead


class InvoiceSummary(BaseModel):
    id: int
    number: str = Field(examples=["ES-2026-000001"])
    kind: str = Field(description="advance (the deposit) or final", examples=["advance"])
    issue_date: date
    order_number: str | None = Field(examples=["S2026-000001"])
    gross: MoneyRead
    pdf_url: str = Field(examples=["/api/v1/invoices/1/pdf"])


class InvoiceRead(InvoiceSummary):
    issued_at: datetime
    language: str
    sale_id: int | None
    payment_id: int | None
    seller: PartyRead
    buyer: PartyRead
    lines: list[InvoiceLineRead]
    net: MoneyRead
    vat: MoneyRead


class WebhookAck(BaseModel):
    received: bool = True
    state: str = Field(
        description="The payment's state after the event, or `ignored`", examples=["captured"]
    )
