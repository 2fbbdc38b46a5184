"""Shapes of the privacy API: consents and their history, the profile, the erasure and the
tailored offers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from caas.core.history import HistoryEntry
from caas.core.schemas import MoneyRead
from caas.privacy.rules import DESCRIPTIONS, OPTIONAL_PURPOSES, Purpose
from caas.privacy.service import ConsentState
from caas.privacy.suggestions import Suggestion
from caas.privacy.usage import FeatureUse


class ConsentRead(BaseModel):
    """The customer's answer for one purpose."""

    purpose: Purpose = Field(
        description="`service`: what running the service needs (always on); "
        "`location_history`: keep where the car has been; `driving_style`: keep speed and the "
        "car's further readings; `product_improvement`: the maker may use the car's usage "
        "without the customer's name; `tailored_offers`: suggest offers from the metered use"
    )
    description: str = Field(
        description="What consenting lets the maker keep or do, for a person",
        examples=[DESCRIPTIONS["location_history"]],
    )
    granted: bool = Field(description="On: the data is kept or used from now on; off by default")
    required: bool = Field(
        description="True for `service`: needed to run the service, not the customer's choice"
    )
    changed_at: datetime | None = Field(
        description="When the customer last changed it, with UTC offset; null: never chosen"
    )

    @classmethod
    def of(cls, state: ConsentState) -> ConsentRead:
        return cls(
            purpose=state.purpose,
            description=DESCRIPTIONS[state.purpose],
            granted=state.granted,
            required=state.required,
            changed_at=state.changed_at,
        )


class ConsentsUpdate(BaseModel):
    """The customer's answers; a purpose left out keeps its answer (`service` is not a choice)."""

    model_config = ConfigDict(extra="forbid")

    location_history: bool | None = Field(
        default=None, description=DESCRIPTIONS["location_history"], examples=[True]
    )
    driving_style: bool | None = Field(
        default=None, description=DESCRIPTIONS["driving_style"], examples=[False]
    )
    product_improvement: bool | None = Field(
        default=None, description=DESCRIPTIONS["product_improvement"], examples=[False]
    )
    tailored_offers: bool | None = Field(
        default=None, description=DESCRIPTIONS["tailored_offers"], examples=[True]
    )

    @model_validator(mode="after")
    def _says_something(self) -> ConsentsUpdate:
        if not self.choices():
            raise ValueError(f"send one or more of {', '.join(OPTIONAL_PURPOSES)}")
        return self

    def choices(self) -> dict[Purpose, bool]:
        chosen: dict[Purpose, bool] = {}
        for purpose in OPTIONAL_PURPOSES:
            answer = getattr(self, purpose)
            if answer is not None:
                chosen[purpose] = answer
        return chosen


class ConsentChangeRead(BaseModel):
    """One change of a consent, as the customer's file keeps it."""

    at: datetime = Field(description="When, with UTC offset")
    purpose: str = Field(description="The purpose changed", examples=["location_history"])
    event: str = Field(
        description="`consent.granted` or `consent.withdrawn`", examples=["consent.granted"]
    )
    from_state: str | None = Field(
        description="The answer before (`granted`, `withdrawn`); null: never chosen"
    )
    to_state: str | None = Field(description="The answer after", examples=["granted"])
    actor: str = Field(description="Who changed it (kind:label)", examples=["customer:ana@x.es"])

    @classmethod
    def of(cls, entry: HistoryEntry) -> ConsentChangeRead:
        return cls(
            at=entry.at,
            purpose=str(entry.details.get("purpose", "")),
            event=entry.event,
            from_state=entry.from_state,
            to_state=entry.to_state,
            actor=f"{entry.actor_kind}:{entry.actor_label}",
        )


class ProfileUpdate(BaseModel):
    """The customer's corrections; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    first_name: str | None = Field(
        default=None, max_length=100, description="Given name", examples=["Ana"]
    )
    last_name: str | None = Field(
        default=None, max_length=100, description="Family name(s)", examples=["García López"]
    )
    phone: str | None = Field(
        default=None,
        max_length=30,
        description="International or national to the customer's country; kept as E.164",
        examples=["+34 612 345 678"],
    )
    street: str | None = Field(
        default=None,
        max_length=200,
        description="Street, number, floor and door",
        examples=["Calle Mayor 1, 3º B"],
    )
    postal_code: str | None = Field(
        default=None,
        max_length=20,
        description="In the format of the customer's country",
        examples=["28013"],
    )
    city: str | None = Field(
        default=None, max_length=120, description="Town or city", examples=["Madrid"]
    )
    language: str | None = Field(
        default=None,
        description="Language of e-mails and pages: es, en, fr, de, it or pt",
        examples=["es"],
    )
    national_id: str | None = Field(
        default=None,
        description="Not correctable here: the dealer corrects the national id (refused)",
        examples=[None],
    )

    @field_validator("national_id")
    @classmethod
    def _not_here(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("your national id is corrected by your dealer: ask them")
        return value

    @model_validator(mode="after")
    def _says_something(self) -> ProfileUpdate:
        if not self.model_dump(exclude_none=True):
            raise ValueError("send at least one field to correct")
        return self


class ProfileChangeRead(BaseModel):
    """One corrected field."""

    field: str = Field(description="The field corrected", examples=["phone"])
    old: str = Field(description="Its value before", examples=["+34612345678"])
    new: str = Field(description="Its value now", examples=["+34699111222"])


class ErasureCreate(BaseModel):
    """The customer confirms the erasure of their account with their password."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(
        min_length=1,
        max_length=200,
        description="The account's password, to confirm",
        examples=["my-long-password"],
    )


class ErasureRead(BaseModel):
    """The account erased, and what the law keeps."""

    erased_at: datetime = Field(description="When, with UTC offset")
    retained: str = Field(
        description="What is kept and why",
        examples=["retained: legal obligation (invoices kept 10 years)"],
    )
    invoices: list[str] = Field(description="Numbers of the invoices kept", examples=[["F-ES-1"]])


class SuggestionRead(BaseModel):
    """A cheaper offer for how the car is used: last month's metered use, or the last 30 days'
    telemetry (season, distance, motorways)."""

    offer_id: int = Field(description="The offer to buy (`POST /api/v1/vehicles/{vin}/purchases`)")
    code: str = Field(description="Feature code", examples=["autopilot_motorway"])
    kind: str = Field(description="Offer kind: subscription or window", examples=["subscription"])
    duration: str = Field(description="1M or 1Y", examples=["1M"])
    basis: str = Field(
        description="What it is read from: metered (last month's metered use), season (days "
        "driven in winter or cold), distance (km driven), motorway (km at motorway speed; needs "
        "the driving_style consent too)",
        examples=["metered"],
    )
    month: str = Field(
        description="The period read (customer's zone): a month, or the last 30 days as "
        "first/last day",
        examples=["2026-01", "2026-01-11/2026-02-10"],
    )
    quantity: str = Field(
        description="In `unit`, exact: the metered use, the days (season) or the km",
        examples=["25.5"],
    )
    unit: str = Field(description="hour, km, activation or day", examples=["hour"])
    paid: MoneyRead = Field(
        description="What that use costs (or would cost) as bought now, over `months`, VAT included"
    )
    price: MoneyRead = Field(description="The offer's price, VAT included")
    months: int = Field(description="Months the offer covers (the saving is over them)")
    saving: MoneyRead = Field(description="Paid over the same months minus the price")
    reason: str = Field(description="Why, for a person, in their language")
    saving_text: str = Field(description="The saving, for a person")

    @classmethod
    def of(cls, suggestion: Suggestion, locale: str) -> SuggestionRead:
        return cls(
            offer_id=suggestion.offer.id,
            code=suggestion.code,
            basis=suggestion.basis,
            kind=suggestion.offer.kind,
            duration=suggestion.offer.duration,
            month=suggestion.month,
            quantity=str(suggestion.quantity),
            unit=suggestion.unit,
            paid=MoneyRead.of(suggestion.paid, locale),
            price=MoneyRead.of(suggestion.price, locale),
            months=suggestion.months,
            saving=MoneyRead.of(suggestion.saving, locale),
            reason=suggestion.reason,
            saving_text=suggestion.saving_text,
        )


class FeatureUseRead(BaseModel):
    """How much the consenting cars used one feature in the month (no one named)."""

    feature: str = Field(description="Feature code", examples=["power_boost"])
    unit: str = Field(description="hour, km or activation", examples=["hour"])
    cars: int = Field(description="How many consenting cars used it", examples=[12])
    quantity: str = Field(description="Total use, in `unit`, exact", examples=["340.5"])

    @classmethod
    def of(cls, use: FeatureUse) -> FeatureUseRead:
        return cls(feature=use.feature, unit=use.unit, cars=use.cars, quantity=str(use.quantity))
