"""The payment provider's wire contract: tokens, authorisations, captures, refunds, events.

The platform never sees a card number: the customer's browser sends it straight to the
provider (`POST /v1/tokens`, no API key, CORS open) and hands the platform the token.
Everything else takes the secret key in `X-Api-Key` and an `Idempotency-Key` header: the
same key with the same body gets the same answer and never moves money twice.

| call | answer |
|---|---|
| `POST /v1/tokens` | 201 `CardToken` |
| `GET /v1/tokens/{id}` | 200 `CardToken` (does it exist, which card; 404 `unknown_token`) |
| `POST /v1/authorizations` | 201 `Authorization` (status `authorised` or `declined`) |
| `POST /v1/authorizations/{id}/capture` | 200 `Authorization` (status `captured`) |
| `POST /v1/authorizations/{id}/void` | 200 `Authorization` (status `voided`) |
| `POST /v1/refunds` | 201 `Refund` |
| `GET /v1/authorizations/{id}` | 200 `Authorization` |
| `GET /v1/authorizations?reference=` | 200 `Authorization` with our reference (404: never came) |
| `GET /v1/settlements?date=YYYY-MM-DD` | 200 list of `Settlement` |
| `POST /sim/authorizations/{id}/chargeback` | 201 `Chargeback` (sandbox control: a dispute) |

Errors answer `ProviderErrorBody`: 400 bad request (`invalid_token`, `amount_too_large`...),
401 wrong key, 404 unknown object, 409 wrong state or an Idempotency-Key reused with another
body, 500 `processing_error` (nothing happened; safe to retry with the same key).

Every change is also sent as a signed event (`caas.protocol.webhooks`) to the platform's
webhook URL: `authorization.succeeded`, `authorization.declined`, `capture.succeeded`,
`void.succeeded`, `refund.succeeded`, `chargeback.created` (the card's bank took captured
money back). An answer that came too late for the caller arrives this way; a caller that
never got one asks by its own reference (`GET /v1/authorizations?reference=`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

API_KEY_HEADER = "X-Api-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"

# Test cards of the sandbox, by what they do.
CARD_SUCCEEDS = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_PROVIDER_ERROR = "4000000000000119"
CARD_ANSWERS_LATE = "4000000000000259"

AuthorizationStatus = Literal["authorised", "declined", "captured", "voided"]
EventType = Literal[
    "authorization.succeeded",
    "authorization.declined",
    "capture.succeeded",
    "void.succeeded",
    "refund.succeeded",
    "chargeback.created",
]


class CardDetails(BaseModel):
    """What the browser sends to tokenise a card; the provider alone ever sees it."""

    number: str = Field(
        min_length=12, max_length=23, description="Card number", examples=[CARD_SUCCEEDS]
    )
    exp_month: int = Field(ge=1, le=12, examples=[12])
    exp_year: int = Field(ge=2000, le=2100, examples=[2030])
    cvc: str = Field(pattern=r"^\d{3,4}$", examples=["123"])


class CardSummary(BaseModel):
    """What the provider keeps of a card: never its number."""

    brand: str = Field(description="Card brand, e.g. visa, mastercard, amex", examples=["visa"])
    last4: str = Field(description="Last four digits of the card number", examples=["4242"])
    exp_month: int = Field(description="Expiry month, 1 to 12", examples=[12])
    exp_year: int = Field(description="Expiry year, four digits", examples=[2030])


class CardToken(BaseModel):
    id: str = Field(description="Token to pay with", examples=["tok_3f9c2a7e5b1d4c8a"])
    card: CardSummary


class AuthorizationCreate(BaseModel):
    amount_minor: int = Field(gt=0, description="Integer minor units", examples=[345000])
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])
    token: str = Field(examples=["tok_3f9c2a7e5b1d4c8a"])
    reference: str = Field(
        max_length=100, description="The merchant's own reference, echoed in events"
    )


class CaptureCreate(BaseModel):
    amount_minor: int | None = Field(
        default=None, gt=0, description="Less than authorised for a partial capture"
    )


class RefundCreate(BaseModel):
    authorization: str = Field(examples=["auth_5e1f0c9a2b7d4e63"])
    amount_minor: int = Field(gt=0)


class Authorization(BaseModel):
    """Money held on a card for the merchant, and what became of it."""

    id: str = Field(
        description="The provider's id of the authorisation", examples=["auth_5e1f0c9a2b7d4e63"]
    )
    status: AuthorizationStatus = Field(
        description="authorised (held), declined, captured (taken) or voided (released)",
        examples=["authorised"],
    )
    amount_minor: int = Field(
        description="Amount authorised, integer minor units", examples=[345000]
    )
    captured_minor: int = Field(
        default=0, description="Amount captured, integer minor units", examples=[345000]
    )
    refunded_minor: int = Field(
        default=0, description="Amount refunded so far, integer minor units", examples=[0]
    )
    charged_back_minor: int = Field(
        default=0,
        description="Amount the card's bank took back in chargebacks, integer minor units",
        examples=[0],
    )
    currency: str = Field(description="ISO 4217 currency code", examples=["EUR"])
    reference: str = Field(
        description="The merchant's own reference, as sent with the authorisation",
        examples=["pay_3b8f0e2a9c71d4e5f6a0"],
    )
    card: CardSummary = Field(description="The card it was taken from")
    decline_code: str | None = Field(
        default=None,
        description="Why the card was declined; null unless declined",
        examples=["card_declined"],
    )
    created_at: datetime = Field(
        description="When the provider authorised or declined it",
        examples=["2026-01-15T09:00:02Z"],
    )


class Refund(BaseModel):
    """Money given back from a captured authorisation."""

    id: str = Field(description="The provider's id of the refund", examples=["re_0b6c1d2e3f4a5b6c"])
    authorization: str = Field(
        description="Id of the authorisation refunded", examples=["auth_5e1f0c9a2b7d4e63"]
    )
    amount_minor: int = Field(description="Amount refunded, integer minor units", examples=[345000])
    currency: str = Field(description="ISO 4217 currency code", examples=["EUR"])
    reference: str = Field(
        description="The merchant's reference of the authorisation",
        examples=["pay_3b8f0e2a9c71d4e5f6a0"],
    )
    created_at: datetime = Field(
        description="When the provider made the refund", examples=["2026-01-20T11:30:00Z"]
    )


class Chargeback(BaseModel):
    """Captured money the card's bank took back from the merchant (a disputed payment)."""

    id: str = Field(
        description="The provider's id of the chargeback", examples=["cb_4d7e2a1f9c0b3e68"]
    )
    authorization: str = Field(
        description="Id of the authorisation disputed", examples=["auth_5e1f0c9a2b7d4e63"]
    )
    amount_minor: int = Field(
        description="Amount taken back, integer minor units", examples=[345000]
    )
    currency: str = Field(description="ISO 4217 currency code", examples=["EUR"])
    reason: str = Field(
        description="The bank's reason code", examples=["fraudulent", "product_not_received"]
    )
    created_at: datetime = Field(
        description="When the bank took the money back", examples=["2026-02-01T10:00:00Z"]
    )


class ChargebackCreate(BaseModel):
    """The sandbox's control: the card's bank disputes a captured authorisation."""

    amount_minor: int | None = Field(
        default=None, gt=0, description="Less than what is left for a partial chargeback"
    )
    reason: str = Field(default="fraudulent", max_length=60, examples=["fraudulent"])


class Settlement(BaseModel):
    """One movement of money, for the merchant's reconciliation: money taken (`capture`),
    given back (`refund`) or taken back by the card's bank (`chargeback`)."""

    kind: Literal["capture", "refund", "chargeback"]
    id: str
    authorization: str
    reference: str
    amount_minor: int
    currency: str
    at: datetime


class Event(BaseModel):
    """A signed notification sent to the merchant's webhook URL."""

    id: str = Field(
        description="The provider's id of the event; a redelivery keeps it",
        examples=["evt_7d2c9e1a4b6f3058"],
    )
    type: EventType = Field(description="What happened", examples=["capture.succeeded"])
    created_at: datetime = Field(
        description="When the provider sent the event", examples=["2026-01-15T09:00:03Z"]
    )
    authorization: Authorization = Field(description="The authorisation as it stands after it")
    refund: Refund | None = Field(
        default=None, description="The refund, for `refund.succeeded` only"
    )
    chargeback: Chargeback | None = Field(
        default=None, description="The chargeback, for `chargeback.created` only"
    )


class ProviderErrorBody(BaseModel):
    code: str = Field(examples=["processing_error"])
    message: str
