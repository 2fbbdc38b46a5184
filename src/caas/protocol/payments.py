"""The payment provider's wire contract: tokens, authorisations, captures, refunds, events.

The platform never sees a card number: the customer's browser sends it straight to the
provider (`POST /v1/tokens`, no API key, CORS open) and hands the platform the token.
Everything else takes the secret key in `X-Api-Key` and an `Idempotency-Key` header: the
same key with the same body gets the same answer and never moves money twice.

| call | answer |
|---|---|
| `POST /v1/tokens` | 201 `CardToken` |
| `POST /v1/authorizations` | 201 `Authorization` (status `authorised` or `declined`) |
| `POST /v1/authorizations/{id}/capture` | 200 `Authorization` (status `captured`) |
| `POST /v1/authorizations/{id}/void` | 200 `Authorization` (status `voided`) |
| `POST /v1/refunds` | 201 `Refund` |
| `GET /v1/authorizations/{id}` | 200 `Authorization` |
| `GET /v1/settlements?date=YYYY-MM-DD` | 200 list of `Settlement` |

Errors answer `ProviderErrorBody`: 400 bad request (`invalid_token`, `amount_too_large`...),
401 wrong key, 404 unknown object, 409 wrong state or an Idempotency-Key reused with another
body, 500 `processing_error` (nothing happened; safe to retry with the same key).

Every change is also sent as a signed event (`caas.protocol.webhooks`) to the platform's
webhook URL: `authorization.succeeded`, `authorization.declined`, `capture.succeeded`,
`void.succeeded`, `refund.succeeded`. An answer that came too late for the caller arrives
this way.
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
    brand: str = Field(examples=["visa"])
    last4: str = Field(examples=["4242"])
    exp_month: int
    exp_year: int


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
    id: str = Field(examples=["auth_5e1f0c9a2b7d4e63"])
    status: AuthorizationStatus
    amount_minor: int
    captured_minor: int = 0
    refunded_minor: int = 0
    currency: str
    reference: str
    card: CardSummary
    decline_code: str | None = Field(default=None, examples=["card_declined"])
    created_at: datetime


class Refund(BaseModel):
    id: str = Field(examples=["re_0b6c1d2e3f4a5b6c"])
    authorization: str
    amount_minor: int
    currency: str
    reference: str
    created_at: datetime


class Settlement(BaseModel):
    """One movement of money, for the merchant's reconciliation."""

    kind: Literal["capture", "refund"]
    id: str
    authorization: str
    reference: str
    amount_minor: int
    currency: str
    at: datetime


class Event(BaseModel):
    """A signed notification sent to the merchant's webhook URL."""

    id: str = Field(examples=["evt_7d2c9e1a4b6f3058"])
    type: EventType
    created_at: datetime
    authorization: Authorization
    refund: Refund | None = None


class ProviderErrorBody(BaseModel):
    code: str = Field(examples=["processing_error"])
    message: str
