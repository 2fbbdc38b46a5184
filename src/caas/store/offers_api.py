"""Routes of the offers: how each feature is sold per country, managed by the operator."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.deps import CurrentUser, Operator, actor_of
from caas.accounts.models import Role, User
from caas.billing import vat
from caas.catalog import service as catalog
from caas.catalog.models import Country, Feature, Platform
from caas.core.api import ClockDep, DbSession, error_responses
from caas.core.errors import NotFound
from caas.core.idempotency import once
from caas.core.money import Money
from caas.core.schemas import MoneyRead
from caas.store import offers, rules
from caas.store.models import Offer

router = APIRouter(prefix="/api/v1", tags=["offers"])

PlatformCode = Annotated[
    str, Path(max_length=20, description="Code of the platform model, any case", examples=["AURA"])
]
FeatureCodePath = Annotated[
    str, Path(max_length=40, description="Code of the feature", examples=["power_boost"])
]
OfferId = Annotated[int, Path(description="Database id of the offer", examples=[1])]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended change; a retry with the same key acts once",
    ),
]

_TERMS_DOC = (
    "Prices are net, in minor units of the country's currency; the customer pays the VAT of "
    "their country on top. A new price applies to what is sold from then on: purchases keep "
    "the price they were sold at."
)


class OfferTermsFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    net_minor: int | None = Field(
        default=None,
        ge=0,
        le=100_000_000,
        description="Net price in minor units (cents): per window, per period, per started "
        "day (custom), per unit (metered), or once (permanent); 0 for a trial only",
        examples=[2900],
    )
    refund_policy: rules.RefundPolicy | None = Field(
        default=None,
        description="What the customer gets back when they stop early: none, end_of_period, "
        "unused_days, full (default per kind: windows none, subscriptions end_of_period, "
        "permanent unused_days)",
        examples=["none"],
    )
    apply_deadline_seconds: int | None = Field(
        default=None,
        ge=offers.APPLY_DEADLINE_RANGE[0],
        le=offers.APPLY_DEADLINE_RANGE[1],
        description="How long the car has to apply a purchase before it is voided or refunded "
        "(default 600)",
        examples=[600],
    )

    def terms(self) -> offers.OfferTerms:
        return offers.OfferTerms(
            net_minor=self.net_minor,
            refund_policy=self.refund_policy,
            apply_deadline_seconds=self.apply_deadline_seconds,
        )


class OfferCreate(OfferTermsFields):
    """A new offer of a feature in a country."""

    country: str = Field(
        pattern=r"^[A-Z]{2}$",
        description="Where it is sold (ISO 3166-1 alpha-2); the currency is the country's",
        examples=["ES"],
    )
    kind: rules.OfferKind = Field(
        description="trial (free, once per car), window, custom (per day), subscription, "
        "permanent or metered",
        examples=["window"],
    )
    duration: str | None = Field(
        default=None,
        max_length=8,
        description="trial: 7D, 14D, 1M (default 1M); window: 1D, 7D, 1M, 1Y, 3Y; "
        "subscription: 1M, 1Y; none for custom, permanent and metered",
        examples=["7D"],
    )
    unit: str | None = Field(
        default=None,
        max_length=20,
        description="Metered offers only (required there): hour, km or activation",
        examples=["hour"],
    )


class OfferUpdate(OfferTermsFields):
    """A change to an offer: only the fields sent change. `active: false` withdraws it from
    sale (what was bought runs on), `true` puts it back."""

    active: bool | None = Field(default=None, description="On sale (true) or withdrawn (false)")


class OfferRead(BaseModel):
    """How a feature is sold in a country."""

    id: int = Field(description="Database id", examples=[1])
    platform: str = Field(description="Code of the platform model", examples=["AURA"])
    feature: str = Field(description="Code of the feature", examples=["power_boost"])
    country: str = Field(description="Where it is sold", examples=["ES"])
    kind: str = Field(description="trial, window, custom, subscription, permanent, metered")
    duration: str = Field(description="1D, 7D, 1M, 1Y, 3Y...; empty when the kind has none")
    unit: str | None = Field(description="Metered offers: what the price is per")
    net: MoneyRead = Field(description="Net price in the country's currency")
    vat_rate_percent: str = Field(description="The country's VAT rate", examples=["21.00"])
    gross: MoneyRead = Field(description="What the customer pays: net plus the country's VAT")
    refund_policy: str = Field(description="none, end_of_period, unused_days or full")
    apply_deadline_seconds: int = Field(description="How long the car has to apply a purchase")
    active: bool = Field(description="On sale (false: withdrawn)")


def offer_read(
    offer: Offer, feature: Feature, platform: Platform, country: Country, vat_rate_bp: int
) -> OfferRead:
    """The offer as the API shows it, its gross with `vat_rate_bp` (the country's rate now)."""
    priced = rules.price_line(offer.net_minor, vat_rate_bp)
    return OfferRead(
        id=offer.id,
        platform=platform.code,
        feature=feature.code,
        country=offer.country,
        kind=offer.kind,
        duration=offer.duration,
        unit=offer.unit,
        net=MoneyRead.of(Money(offer.net_minor, offer.currency), country.language),
        vat_rate_percent=f"{vat_rate_bp / 100:.2f}",
        gross=MoneyRead.of(Money(priced.gross_minor, offer.currency), country.language),
        refund_policy=offer.refund_policy,
        apply_deadline_seconds=offer.apply_deadline_seconds,
        active=offer.active,
    )


def _read(session: Session, offer: Offer, *, now: datetime) -> dict[str, Any]:
    feature = session.get(Feature, offer.feature_id)
    assert feature is not None
    platform = session.get(Platform, feature.platform_id)
    country = session.get(Country, offer.country)
    assert platform is not None and country is not None
    rate = vat.rate_at(session, offer.country, now)
    return offer_read(offer, feature, platform, country, rate).model_dump(mode="json")


def _visible(offer: Offer, user: User) -> bool:
    return offer.active or user.role is Role.OPERATOR


@router.get(
    "/platforms/{code}/features/{feature_code}/offers",
    response_model=list[OfferRead],
    summary="How a feature is sold: its offers per country, with net and gross prices",
    description="Any signed-in user reads the offers on sale; the operator also sees the "
    "withdrawn ones. " + _TERMS_DOC,
    responses=error_responses(401, 404, 422),
)
def list_offers(
    code: PlatformCode,
    feature_code: FeatureCodePath,
    session: DbSession,
    clock: ClockDep,
    user: CurrentUser,
    country: Annotated[
        str | None,
        Query(pattern=r"^[A-Z]{2}$", description="Only this country's offers", examples=["ES"]),
    ] = None,
) -> list[OfferRead]:
    platform = catalog.platform_or_404(session, code)
    feature = catalog.get_feature(session, platform, feature_code)
    countries = {c.code: c for c in session.scalars(select(Country))}
    rates = {each: vat.rate_at(session, each, clock.now()) for each in countries}
    return [
        offer_read(offer, feature, platform, countries[offer.country], rates[offer.country])
        for offer in offers.offers_of_features(session, [feature.id])
        if _visible(offer, user) and country in (None, offer.country)
    ]


@router.post(
    "/platforms/{code}/features/{feature_code}/offers",
    response_model=OfferRead,
    status_code=201,
    summary="Offer a feature in a country (operator)",
    description="422 names the field at fault: a duration the kind does not have, a metered "
    "offer without its unit (or a unit on another kind), a priced trial or an unpriced paid "
    "offer, a country the feature may not be sold in. 409 when the feature already has that "
    "offer (kind and duration) or a trial in the country. " + _TERMS_DOC,
    responses=error_responses(401, 403, 404, 409, 422),
)
def create_offer(
    code: PlatformCode,
    feature_code: FeatureCodePath,
    body: OfferCreate,
    session: DbSession,
    clock: ClockDep,
    user: Operator,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()
    platform = catalog.platform_or_404(session, code)
    feature = catalog.get_feature(session, platform, feature_code)

    def act() -> dict[str, Any]:
        offer = offers.create_offer(
            session,
            feature=feature,
            country=body.country,
            kind=body.kind,
            duration=body.duration,
            unit=body.unit,
            terms=body.terms(),
            actor=actor_of(user),
            now=now,
        )
        return _read(session, offer, now=now)

    response = once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation=f"store.offer.create:{feature.id}",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
    )
    return JSONResponse(response, status_code=201)


@router.get(
    "/offers/{offer_id}",
    response_model=OfferRead,
    summary="One offer, with its net and gross price",
    responses=error_responses(401, 404, 422),
)
def get_offer(
    offer_id: OfferId, session: DbSession, clock: ClockDep, user: CurrentUser
) -> dict[str, Any]:
    offer = offers.get_offer(session, offer_id)
    if not _visible(offer, user):
        raise NotFound(f"no offer {offer_id}", code="offer.not_found", field="offer_id")
    return _read(session, offer, now=clock.now())


@router.patch(
    "/offers/{offer_id}",
    response_model=OfferRead,
    summary="Change an offer's price, refund policy or deadline; withdraw or reinstate it "
    "(operator)",
    description="Only the fields sent change. " + _TERMS_DOC,
    responses=error_responses(401, 403, 404, 422),
)
def update_offer(
    offer_id: OfferId,
    body: OfferUpdate,
    session: DbSession,
    clock: ClockDep,
    user: Operator,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()

    def act() -> dict[str, Any]:
        offer = offers.get_offer(session, offer_id, lock=True)
        offers.update_offer(
            session, offer, terms=body.terms(), active=body.active, actor=actor_of(user), now=now
        )
        return _read(session, offer, now=now)

    return JSONResponse(
        once(
            session,
            principal=f"user:{user.id}",
            key=idempotency_key,
            operation=f"store.offer.update:{offer_id}",
            request=body.model_dump(mode="json", exclude_unset=True),
            now=now,
            act=act,
        )
    )
