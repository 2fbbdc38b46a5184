"""Shapes of the billing API: paying an order, payments, invoices, the provider's webhook."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from caas.core.schemas import MoneyRead


class PaymentCreate(BaseModel):
    """Pay the deposit or the rest of an order with a card token from the payment provider."""

    kind: Literal["deposit", "final"] = Field(
        description="`deposit` while the order awaits it; `final` once the car is at the dealer",
        examples=["deposit"],
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
    """One attempt to take money from the customer's card, failed ones included."""

    id: int = Field(description="Database id of the payment", examples=[12])
    sale_id: int | None = Field(description="Database id of the order it pays", examples=[1])
    kind: str = Field(
        description="`deposit` or `final` (the rest, once the car is at the dealer)",
        examples=["deposit"],
    )
    state: str = Field(
        description="pending, authorised, captured, failed, voided or refunded",
        examples=["captured"],
    )
    amount: MoneyRead = Field(description="The amount charged, VAT included")
    refunded: MoneyRead = Field(description="How much of it was given back (zero if none)")
    card_brand: str | None = Field(
        description="Card brand the provider reported; null until it answers", examples=["visa"]
    )
    card_last4: str | None = Field(
        description="Last four digits of the card; the number itself is never stored",
        examples=["4242"],
    )
    failure_code: str | None = Field(
        description="Why it failed: card_declined, provider_error...", examples=[None]
    )
    failure_reason: str | None = Field(
        description="Why it failed, for a person; null unless failed", examples=[None]
    )
    invoice_id: int | None = Field(
        description="The invoice, once the money is captured", examples=[3]
    )
    invoice_number: str | None = Field(
        description="Number of that invoice", examples=["ES-2026-000001"]
    )
    created_at: datetime = Field(description="When the payment was started, with UTC offset")
    captured_at: datetime | None = Field(
        description="When the money was captured, with UTC offset; null until then"
    )


class PartyRead(BaseModel):
    """The seller or the buyer, as printed on the invoice."""

    name: str = Field(description="Legal or full name", examples=["caas Motors S.L."])
    tax_id: str = Field(
        description="VAT number of the seller, national id of the buyer",
        examples=["ESB87654323"],
    )
    address: str = Field(
        description="Postal address, one line per line of the letter",
        examples=["Calle de Alcalá 200\n28028 Madrid\nEspaña"],
    )


class InvoiceLineRead(BaseModel):
    """One line of an invoice."""

    position: int = Field(description="Line number on the invoice, from 1", examples=[1])
    description: str = Field(
        description="What is invoiced", examples=["Advance payment on order S2026-000001"]
    )
    net: MoneyRead = Field(
        description="Amount without VAT; negative where a final invoice deducts the deposit"
    )
    vat_rate_percent: str = Field(description="VAT rate applied", examples=["21.00"])
    vat: MoneyRead = Field(description="VAT of the line, rounded half up")
    gross: MoneyRead = Field(description="Net plus VAT")


class InvoiceSummary(BaseModel):
    """An invoice in a list, with the link to its PDF."""

    id: int = Field(description="Database id of the invoice", examples=[3])
    number: str = Field(
        description="Gap-free number per country series and year: series, year, sequence",
        examples=["ES-2026-000001"],
    )
    kind: str = Field(
        description="advance (the deposit), final (the rest of the sale), option (the "
        "store's options, renewals, occurrences, metered usage) or credit_note (a refund: "
        "negative lines, its own series R + country)",
        examples=["advance"],
    )
    corrects_number: str | None = Field(
        default=None,
        description="For a credit note, the number of the invoice it corrects",
        examples=["ES-2026-000001"],
    )
    issue_date: date = Field(description="Date of issue, in the seller's country")
    order_number: str | None = Field(
        description="Number of the order it belongs to", examples=["S2026-000001"]
    )
    gross: MoneyRead = Field(description="Amount invoiced, VAT included")
    pdf_url: str = Field(
        description="The invoice as a PDF (needs a login)", examples=["/api/v1/invoices/1/pdf"]
    )


class InvoiceRead(InvoiceSummary):
    """An issued invoice with its parties, lines and totals; it never changes once issued."""

    issued_at: datetime = Field(description="When it was issued, with UTC offset")
    language: str = Field(description="Language it is written in (ISO 639-1)", examples=["es"])
    sale_id: int | None = Field(description="Database id of the order", examples=[1])
    payment_id: int | None = Field(
        description="Database id of the payment it records", examples=[12]
    )
    seller: PartyRead = Field(description="The maker, registered for VAT in the country")
    buyer: PartyRead = Field(description="The customer")
    lines: list[InvoiceLineRead] = Field(description="What is invoiced, in order")
    net: MoneyRead = Field(description="Sum of the lines' net amounts")
    vat: MoneyRead = Field(description="Sum of the lines' VAT")


class WebhookAck(BaseModel):
    """The platform's answer to a payment provider event."""

    received: bool = Field(default=True, description="Always true: the event was taken")
    state: str = Field(
        description="The payment's state after the event, or `ignored`", examples=["captured"]
    )
