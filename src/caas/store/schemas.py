"""Shapes of the customer's store API: the store of a car, quotes, purchases."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, Field

from caas.core.schemas import MoneyRead


class PurchaseItem(BaseModel):
    """One option of a cart: an offer, and dates when the offer takes them."""

    offer_id: int = Field(ge=1, description="The offer bought (from the car's store)", examples=[7])
    starts_at: AwareDatetime | None = Field(
        default=None,
        description="A planned start in the future (any kind), or the first day of custom "
        "dates; null: now, or when the option already running ends (an extension)",
        examples=[None],
    )
    ends_at: AwareDatetime | None = Field(
        default=None,
        description="The end of custom dates (custom offers only)",
        examples=[None],
    )
    spending_cap_minor: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="Metered offers only: the most this option may cost per month, in minor "
        "units of the offer's currency, VAT included; null: no cap",
        examples=[None],
    )


class QuoteCreate(BaseModel):
    """What the customer means to buy for one car; a quote writes nothing."""

    items: list[PurchaseItem] = Field(
        min_length=1, max_length=10, description="The options, one line each"
    )


class PurchaseCreate(QuoteCreate):
    """Buy one or several options for one car, paid with a card token from the provider."""

    payment_method: str = Field(
        min_length=5,
        max_length=80,
        pattern=r"^tok_[A-Za-z0-9]+$",
        description="Token from the provider's `POST /v1/tokens` (reusable: subscriptions "
        "renew with it); the card itself never reaches this platform",
        examples=["tok_3f9c2a7e5b1d4c8a"],
    )


class RefusalRead(BaseModel):
    """Why the car cannot get an option now."""

    reason: str = Field(
        description="`store.not_eligible.<reason>` without its prefix: not_delivered, "
        "withdrawn, hardware_missing, software_too_old, requires_feature, conflicts_with, "
        "not_sold_in_country, maintenance_overdue, trial_used, already_permanent",
        examples=["requires_feature"],
    )
    message: str = Field(
        description="The reason for a person, in the reader's language",
        examples=["It needs Driver assistance active on the car (or in the same purchase)."],
    )
    details: dict[str, str] = Field(
        description="What the reason concerns, e.g. `feature` (the option required)",
        examples=[{"feature": "driver_assist"}],
    )


class PriceRead(BaseModel):
    """A price with the VAT of the customer's country."""

    net: MoneyRead = Field(description="Without VAT")
    vat_rate_bp: int = Field(description="VAT rate in basis points (2100 = 21 %)", examples=[2100])
    vat: MoneyRead = Field(description="The VAT of this line")
    gross: MoneyRead = Field(description="What the customer pays")


class OfferRead(BaseModel):
    """One way to buy an option in the customer's country."""

    id: int = Field(description="Database id of the offer", examples=[7])
    kind: str = Field(
        description="trial, window, custom, subscription, permanent or metered",
        examples=["window"],
    )
    duration: str = Field(
        description="1D, 7D, 1M, 1Y, 3Y...; empty where the kind has none", examples=["1M"]
    )
    unit: str | None = Field(
        description="Metered only: the price is per hour, km or activation", examples=[None]
    )
    price: PriceRead = Field(
        description="Per window, per period, per started day (custom) or per unit (metered)"
    )
    refund_policy: str = Field(
        description="What comes back when it stops early: none, end_of_period, unused_days, full",
        examples=["none"],
    )
    refusals: list[RefusalRead] = Field(
        description="Why this offer cannot be bought now (empty: it can)"
    )


class OwnedRead(BaseModel):
    """One of the car's options, current or to come."""

    entitlement_id: int = Field(description="Database id of the entitlement", examples=[31])
    code: str = Field(description="The option's code", examples=["power_boost"])
    source: str = Field(
        description="plan, trial, purchase, subscription, permanent, metered, occurrence",
        examples=["purchase"],
    )
    state: str = Field(description="delivering or active", examples=["active"])
    enabled: bool = Field(description="Switched on by the owner", examples=[True])
    valid_from: datetime = Field(description="From when, with UTC offset")
    valid_until: datetime | None = Field(description="Until when; null: no end")
    purchase_id: int | None = Field(description="The purchase that bought it", examples=[4])


class StoreFeatureRead(BaseModel):
    """One option of the car's platform as the store shows it."""

    code: str = Field(description="The option's code", examples=["power_boost"])
    name: str = Field(description="Its name in the reader's language", examples=["+50 % power"])
    description: str = Field(description="What it does, in the reader's language")
    category: str = Field(description="performance, safety, comfort...", examples=["performance"])
    offers: list[OfferRead] = Field(description="How it is sold in the customer's country")
    refusals: list[RefusalRead] = Field(
        description="Why the car cannot get it now, whatever the offer (empty: it can)"
    )
    owned: list[OwnedRead] = Field(description="What the car has of it now or to come")


class StoreRead(BaseModel):
    """The store of one car: every option of its platform, with prices and reasons."""

    vin: str = Field(description="The car", examples=["WC9AURA1XTM500001"])
    country: str = Field(description="The customer's country (prices, VAT)", examples=["ES"])
    language: str = Field(description="The language of the texts", examples=["es"])
    features: list[StoreFeatureRead] = Field(description="Every option of the car's platform")


class LineRead(BaseModel):
    """One line of a quote or purchase: an option, its window and its price."""

    offer_id: int = Field(description="The offer", examples=[7])
    code: str = Field(description="The option's code", examples=["power_boost"])
    kind: str = Field(description="The offer's kind", examples=["window"])
    description: str = Field(
        description="As the invoice will say", examples=["+50 % power, 1 month"]
    )
    valid_from: datetime = Field(description="From when, with UTC offset")
    valid_until: datetime | None = Field(description="Until when; null: no end")
    price: PriceRead = Field(description="This line's price with VAT")


class QuoteLineRead(LineRead):
    """A line of a quote."""

    extends: bool = Field(
        description="It starts when the same option already running ends", examples=[False]
    )


class QuoteRead(BaseModel):
    """What a purchase would cost; nothing is written."""

    vin: str = Field(description="The car", examples=["WC9AURA1XTM500001"])
    lines: list[QuoteLineRead] = Field(description="One line per option")
    net: MoneyRead = Field(description="Total without VAT")
    vat: MoneyRead = Field(description="Total VAT")
    gross: MoneyRead = Field(description="Total to pay now")


class PurchaseLineRead(LineRead):
    """A line of a purchase, with the entitlement it became."""

    entitlement_id: int | None = Field(
        description="The entitlement, once delivered to the car", examples=[31]
    )
    entitlement_state: str | None = Field(
        description="delivering, active, ended or revoked", examples=["active"]
    )


class PurchaseRead(BaseModel):
    """A purchase and where it stands: paid, delivering, active, or refunded with the reason."""

    id: int = Field(description="Database id of the purchase", examples=[4])
    vin: str = Field(description="The car", examples=["WC9AURA1XTM500001"])
    state: str = Field(
        description="authorising (payment in progress), delivering (paid, on its way to the "
        "car), active, failed (payment refused) or refunded",
        examples=["active"],
    )
    status: str = Field(
        description="The state for a person, in the reader's language",
        examples=["Active on your car"],
    )
    waiting_for_parking: bool = Field(
        description="The car has the change and applies it once parked", examples=[False]
    )
    lines: list[PurchaseLineRead] = Field(description="One line per option")
    net: MoneyRead = Field(description="Total without VAT")
    vat: MoneyRead = Field(description="Total VAT")
    gross: MoneyRead = Field(description="Total paid")
    payment_state: str | None = Field(
        description="pending, authorised, captured, voided, failed; null when nothing is paid",
        examples=["captured"],
    )
    invoice_number: str | None = Field(
        description="The invoice, once the money is captured", examples=["ES-2026-000004"]
    )
    failure_code: str | None = Field(
        description="Why it failed or was refunded: card_declined, car_rejected, "
        "not_applied_in_time...",
        examples=[None],
    )
    failure_reason: str | None = Field(
        description="The same for a person (the car's own reason when it refused)",
        examples=[None],
    )
    configuration_version: int | None = Field(
        description="The configuration version that carries it to the car", examples=[3]
    )
    deadline_at: datetime | None = Field(
        description="Until when the car may apply it before the money comes back"
    )
    created_at: datetime = Field(description="When it was bought, with UTC offset")
