"""The operator's console: every order, the catalog with its features, offers and prices, and any
customer's file."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.accounts.models import User
from caas.billing import vat
from caas.catalog import rules as catalog_rules
from caas.catalog import service as catalog
from caas.catalog.models import Country, Feature, Platform, PlatformPrice
from caas.catalog.schemas import FeatureCreate, FeatureUpdate
from caas.core.api import ClockDep, DbSession
from caas.core.errors import CaasError, NotFound
from caas.files import service as files
from caas.sales import service as sales
from caas.sales.schemas import CountryCode
from caas.store import offers
from caas.store import rules as store_rules
from caas.store.models import Offer
from caas.store.offers_api import OfferCreate, OfferUpdate
from caas.web.csrf import CSRF_FIELD, csrf_protect
from caas.web.forms import FormErrors, FormValues, PostedForm, once_per_form, values_of
from caas.web.orders import (
    STATES,
    customer_file_page,
    order_list,
    order_view,
)
from caas.web.pages import OperatorPage, PageRoute, flash, language_of, render, see_other

router = APIRouter(
    prefix="/operator",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)


def _countries(session: Session) -> list[Country]:
    return [catalog.get_country(session, code) for code in get_args(CountryCode)]


@router.get("")
def operator_home(_: OperatorPage) -> Response:
    return see_other("/operator/orders")


@router.get("/orders")
def orders_page(
    request: Request,
    session: DbSession,
    user: OperatorPage,
    search: Annotated[str | None, Query(max_length=100)] = None,
    state: Annotated[str | None, Query(max_length=40)] = None,
    country: Annotated[str | None, Query(max_length=2)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    countries = _countries(session)
    country = country if country in {c.code for c in countries} else None
    orders = order_list(
        session,
        user,
        language=language_of(request, user),
        search=search,
        state=state,
        country=country,
        page=page,
    )
    context: dict[str, object] = {
        "orders": orders,
        "states": STATES,
        "country": country or "",
        "order_base": "/operator/orders",
        "countries": [(c.code, c.name) for c in countries],
    }
    return render(request, "operator/orders.html", context)


@router.get("/orders/{sale_id}")
def order_page(request: Request, sale_id: int, session: DbSession, user: OperatorPage) -> Response:
    sale = sales.get_sale_for(session, user, sale_id)
    view = order_view(session, sale, language_of(request, user))
    context = {
        "order": view,
        "zone": view.zone,
        "can_act": False,
        "file_url": f"/operator/customers/{sale.customer_id}",
    }
    return render(request, "order.html", context)


@dataclass(frozen=True)
class PlatformPrices:
    """A platform with its base and maintenance price, and each option's, per country."""

    platform: Platform
    prices: dict[str, PlatformPrice]
    features: list[Feature]
    feature_prices: dict[tuple[str, str], int]


def _platform_prices(
    session: Session, platform: Platform, countries: list[Country]
) -> PlatformPrices:
    features = catalog.platform_features(session, platform.id)
    prices = {}
    feature_prices = {}
    for country in countries:
        prices[country.code] = catalog.platform_price(session, platform, country.code)
        # Only the features sold in the country have a plan price there.
        codes = [
            feature.code
            for feature in features
            if feature.countries is None or country.code in feature.countries
        ]
        for priced in catalog.plan_features(session, platform, country.code, codes):
            feature_prices[(priced.feature.code, country.code)] = priced.plan_net_minor
    return PlatformPrices(platform, prices, features, feature_prices)


@router.get("/catalog")
def catalog_page(
    request: Request, session: DbSession, clock: ClockDep, _: OperatorPage
) -> Response:
    countries = _countries(session)
    platforms = [
        _platform_prices(session, platform, countries)
        for platform in catalog.list_platforms(session)
    ]
    now = clock.now()
    vat_rates = {country.code: vat.rate_at(session, country.code, now) for country in countries}
    context = {"countries": countries, "vat_rates": vat_rates, "platforms": platforms}
    return render(request, "operator/catalog.html", context)


@router.get("/customers/{customer_id}")
def customer_page(
    request: Request, customer_id: int, session: DbSession, clock: ClockDep, user: OperatorPage
) -> Response:
    scope = files.file_for(session, user, customer_id)
    language = language_of(request, user)
    context = customer_file_page(session, scope, language=language, now=clock.now())
    context["order_base"] = "/operator/orders"
    return render(request, "customer_file.html", context)


# --- the catalog: features and their offers ------------------------------------------------


@dataclass(frozen=True)
class OfferRow:
    """One way a feature is sold (kind, duration, unit), with its offer in each country."""

    kind: str
    duration: str
    unit: str | None
    by_country: dict[str, Offer]


@dataclass(frozen=True)
class FeatureOffers:
    feature: Feature
    name: str
    rows: list[OfferRow]


def _offer_rows(feature_offers: list[Offer]) -> list[OfferRow]:
    rows: dict[tuple[str, str, str | None], dict[str, Offer]] = {}
    for offer in sorted(feature_offers, key=offers.offer_order):
        rows.setdefault((offer.kind, offer.duration, offer.unit), {})[offer.country] = offer
    return [OfferRow(kind, duration, unit, found) for (kind, duration, unit), found in rows.items()]


def _feature_offers(
    session: Session, features: list[Feature], language: str
) -> list[FeatureOffers]:
    by_feature: dict[int, list[Offer]] = {feature.id: [] for feature in features}
    for offer in offers.offers_of_features(session, list(by_feature)):
        by_feature[offer.feature_id].append(offer)
    return [
        FeatureOffers(
            feature, catalog.feature_text(feature, language)[0], _offer_rows(by_feature[feature.id])
        )
        for feature in features
    ]


@router.get("/catalog/{platform_code}")
def catalog_platform_page(
    request: Request, platform_code: str, session: DbSession, user: OperatorPage
) -> Response:
    platform = catalog.platform_or_404(session, platform_code)
    features = catalog.platform_features(session, platform.id)
    context = {
        "platform": platform,
        "countries": _countries(session),
        "features": _feature_offers(session, features, language_of(request, user)),
    }
    return render(request, "operator/catalog_platform.html", context)


def _feature_values(feature: Feature | None) -> FormValues:
    """The feature form filled with what the catalog says now (a new one: sold everywhere)."""
    if feature is None:
        return {
            "idempotency_key": uuid.uuid4().hex,
            "countries_everywhere": "true",
            "requires": [],
            "conflicts": [],
            "countries": [],
        }
    values: FormValues = {
        "idempotency_key": uuid.uuid4().hex,
        "category": feature.category,
        "min_software_version": feature.min_software_version or "",
        "requires": list(feature.requires or []),
        "conflicts": list(feature.conflicts or []),
        "countries_everywhere": "true" if feature.countries is None else "",
        "countries": list(feature.countries or []),
        "requires_maintenance": "true" if feature.requires_maintenance else "",
        "active": "true" if feature.active else "",
    }
    for language in catalog_rules.LANGUAGES:
        values[f"names.{language}"] = (feature.names or {}).get(language, "")
        values[f"descriptions.{language}"] = (feature.descriptions or {}).get(language, "")
    for name, value in (feature.parameters or {}).items():
        values[f"parameters.{name}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return values


def _render_feature(
    request: Request,
    session: Session,
    user: User,
    platform: Platform,
    feature: Feature | None,
    *,
    values: FormValues | None = None,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    """The feature's page (its offers and its form), or the form of a new one (`feature`
    None)."""
    language = language_of(request, user)
    siblings = [f for f in catalog.platform_features(session, platform.id) if f is not feature]
    context = {
        "platform": platform,
        "feature": feature,
        "feature_name": catalog.feature_text(feature, language)[0] if feature else "",
        "siblings": [(f.code, catalog.feature_text(f, language)[0]) for f in siblings],
        "countries": _countries(session),
        "text_languages": catalog_rules.LANGUAGES,
        "categories": catalog_rules.CATEGORIES,
        "parameters": list((feature.parameters or {}).keys()) if feature else [],
        "rows": _offer_rows(offers.offers_of_features(session, [feature.id])) if feature else [],
        "values": values or _feature_values(feature),
        "errors": errors or FormErrors(),
    }
    return render(request, "operator/catalog_feature.html", context, status_code=status_code)


@router.get("/catalog/{platform_code}/features/new")
def new_feature_page(
    request: Request, platform_code: str, session: DbSession, user: OperatorPage
) -> Response:
    platform = catalog.platform_or_404(session, platform_code)
    return _render_feature(request, session, user, platform, None)


@router.post("/catalog/{platform_code}/features")
def create_feature(
    request: Request,
    platform_code: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
) -> Response:
    values = values_of(form, lists=("requires", "conflicts", "countries"))
    now = clock.now()
    platform = catalog.platform_or_404(session, platform_code)

    def act() -> dict[str, Any]:
        body = FeatureCreate.model_validate(
            {
                **_feature_fields(values, {}),
                "code": values.get("code", "").strip(),
                "needs_hardware": values.get("needs_hardware") == "true",
            }
        )
        feature = catalog.create_feature(session, platform, body, actor=actor_of(user), now=now)
        return {"code": feature.code}

    try:
        created = once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.catalog.feature.create:{platform.id}",
            request=_without_secrets(values),
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        if isinstance(error, NotFound):
            raise
        status = error.status if isinstance(error, CaasError) else 422
        errors = FormErrors.of(error)
        return _render_feature(
            request, session, user, platform, None, values=values, errors=errors, status_code=status
        )
    flash(request, "flash.feature_saved")
    return see_other(f"/operator/catalog/{platform.code}/{created['code']}")


@router.get("/catalog/{platform_code}/{feature_code}")
def catalog_feature_page(
    request: Request, platform_code: str, feature_code: str, session: DbSession, user: OperatorPage
) -> Response:
    platform = catalog.platform_or_404(session, platform_code)
    feature = catalog.get_feature(session, platform, feature_code)
    return _render_feature(request, session, user, platform, feature)


def _parameter(value: str, current: object) -> object:
    """A parameter as typed, read as the type it has now (a number stays a number)."""
    if isinstance(current, bool):
        return value == "true"
    if isinstance(current, int):
        try:
            return int(value)
        except ValueError:
            return value  # the schema refuses it with the field's name
    return value


def _feature_fields(values: FormValues, parameters: dict[str, object]) -> dict[str, Any]:
    """The posted feature form as a body for `FeatureUpdate` (every field sent: a form is
    whole); `parameters` are the feature's, read back in the types they have now."""
    return {
        "names": {
            language: values.get(f"names.{language}", "").strip()
            for language in catalog_rules.LANGUAGES
            if values.get(f"names.{language}", "").strip()
        },
        "descriptions": {
            language: values.get(f"descriptions.{language}", "").strip()
            for language in catalog_rules.LANGUAGES
            if values.get(f"descriptions.{language}", "").strip()
        },
        "category": values.get("category", ""),
        "min_software_version": values.get("min_software_version", "").strip() or None,
        "requires": values.get("requires", []),
        "conflicts": values.get("conflicts", []),
        "countries": None
        if values.get("countries_everywhere") == "true"
        else values.get("countries", []),
        "requires_maintenance": values.get("requires_maintenance") == "true",
        "parameters": {
            name: _parameter(values.get(f"parameters.{name}", ""), current)
            for name, current in parameters.items()
        },
    }


def _without_secrets(values: FormValues) -> FormValues:
    return {k: v for k, v in values.items() if k not in (CSRF_FIELD, "idempotency_key")}


@router.post("/catalog/{platform_code}/{feature_code}")
def update_feature(
    request: Request,
    platform_code: str,
    feature_code: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
) -> Response:
    values = values_of(form, lists=("requires", "conflicts", "countries"))
    now = clock.now()
    platform = catalog.platform_or_404(session, platform_code)
    feature = catalog.get_feature(session, platform, feature_code, lock=True)

    def act() -> dict[str, Any]:
        body = FeatureUpdate.model_validate(
            {
                **_feature_fields(values, feature.parameters or {}),
                "active": values.get("active") == "true",
            }
        )
        catalog.update_feature(session, feature, body, actor=actor_of(user), now=now)
        return {"feature_id": feature.id}

    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.catalog.feature.update:{feature.id}",
            request=_without_secrets(values),
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        if isinstance(error, NotFound):
            raise
        session.refresh(feature)
        status = error.status if isinstance(error, CaasError) else 422
        errors = FormErrors.of(error)
        return _render_feature(
            request,
            session,
            user,
            platform,
            feature,
            values=values,
            errors=errors,
            status_code=status,
        )
    flash(request, "flash.feature_saved")
    return see_other(f"/operator/catalog/{platform.code}/{feature.code}")


# --- offers --------------------------------------------------------------------------------

_MONEY = re.compile(r"^[0-9]{1,7}([.,][0-9]{1,2})?$")


def _minor_units(typed: str) -> int | str:
    """ "12", "12.5", "12,50" as cents; anything else is left for the schema to refuse."""
    typed = typed.strip()
    if not _MONEY.match(typed):
        return typed
    whole, _, cents = typed.replace(",", ".").partition(".")
    return int(whole) * 100 + int(cents.ljust(2, "0") or 0)


def _offer_terms(values: FormValues) -> dict[str, Any]:
    terms: dict[str, Any] = {"net_minor": _minor_units(values.get("net", ""))}
    if values.get("refund_policy"):
        terms["refund_policy"] = values["refund_policy"]
    if values.get("apply_deadline_seconds", "").strip():
        terms["apply_deadline_seconds"] = values["apply_deadline_seconds"].strip()
    return terms


# The offer forms call the price `net` (in the currency's units), the API `net_minor`.
_OFFER_FIELDS = {"net_minor": "net"}


def _render_offer(
    request: Request,
    session: Session,
    platform: Platform,
    feature: Feature,
    *,
    offer: Offer | None,
    values: FormValues,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    user = request.state.user
    context = {
        "platform": platform,
        "feature": feature,
        "feature_name": catalog.feature_text(feature, language_of(request, user))[0],
        "offer": offer,
        "countries": _countries(session),
        "kinds": store_rules.OFFER_KINDS,
        "durations": sorted(
            {d for durations in store_rules.DURATIONS.values() for d in durations if d},
            key=_duration_order,
        ),
        "units": store_rules.METERED_UNITS,
        "policies": store_rules.REFUND_POLICIES,
        "values": values,
        "errors": errors or FormErrors(),
    }
    return render(request, "operator/catalog_offer.html", context, status_code=status_code)


def _duration_order(duration: str) -> tuple[int, int]:
    return "DMY".index(duration[-1]), int(duration[:-1])


def _net_text(offer: Offer) -> str:
    whole, cents = divmod(offer.net_minor, 100)
    return f"{whole}.{cents:02d}"


@router.get("/catalog/{platform_code}/{feature_code}/offers/new")
def new_offer_page(
    request: Request, platform_code: str, feature_code: str, session: DbSession, _: OperatorPage
) -> Response:
    platform = catalog.platform_or_404(session, platform_code)
    feature = catalog.get_feature(session, platform, feature_code)
    values = {
        "idempotency_key": uuid.uuid4().hex,
        "country": request.query_params.get("country", ""),
    }
    return _render_offer(request, session, platform, feature, offer=None, values=values)


@router.post("/catalog/{platform_code}/{feature_code}/offers")
def create_offer(
    request: Request,
    platform_code: str,
    feature_code: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
) -> Response:
    values = values_of(form)
    now = clock.now()
    platform = catalog.platform_or_404(session, platform_code)
    feature = catalog.get_feature(session, platform, feature_code)

    def act() -> dict[str, Any]:
        body = OfferCreate.model_validate(
            {
                "country": values.get("country", ""),
                "kind": values.get("kind", ""),
                "duration": values.get("duration") or None,
                "unit": values.get("unit") or None,
                **_offer_terms(values),
            }
        )
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
        return {"offer_id": offer.id}

    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.store.offer.create:{feature.id}",
            request=_without_secrets(values),
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        if isinstance(error, NotFound):
            raise
        status = error.status if isinstance(error, CaasError) else 422
        errors = FormErrors.of(error, aliases=_OFFER_FIELDS)
        return _render_offer(
            request,
            session,
            platform,
            feature,
            offer=None,
            values=values,
            errors=errors,
            status_code=status,
        )
    flash(request, "flash.offer_saved")
    return see_other(f"/operator/catalog/{platform.code}/{feature.code}")


_OFFER_FLASH = {"withdraw": "flash.offer_withdrawn", "reinstate": "flash.offer_reinstated"}


def _offer_context(session: Session, offer_id: int) -> tuple[Offer, Feature, Platform]:
    offer = offers.get_offer(session, offer_id)
    feature = session.get(Feature, offer.feature_id)
    assert feature is not None
    return offer, feature, catalog.get_platform(session, feature.platform_id)


@router.get("/offers/{offer_id}")
def offer_page(request: Request, offer_id: int, session: DbSession, _: OperatorPage) -> Response:
    offer, feature, platform = _offer_context(session, offer_id)
    values = {
        "idempotency_key": uuid.uuid4().hex,
        "net": _net_text(offer),
        "refund_policy": offer.refund_policy,
        "apply_deadline_seconds": str(offer.apply_deadline_seconds),
    }
    return _render_offer(request, session, platform, feature, offer=offer, values=values)


@router.post("/offers/{offer_id}")
def update_offer(
    request: Request,
    offer_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: OperatorPage,
) -> Response:
    """Save the offer's terms, or withdraw or reinstate it (the button pressed: `action`)."""
    values = values_of(form)
    now = clock.now()
    offer, feature, platform = _offer_context(session, offer_id)
    action = values.get("action", "save")

    def act() -> dict[str, Any]:
        locked = offers.get_offer(session, offer_id, lock=True)
        if action in ("withdraw", "reinstate"):
            offers.set_offer_active(
                session, locked, active=action == "reinstate", actor=actor_of(user), now=now
            )
        else:
            body = OfferUpdate.model_validate(_offer_terms(values))
            offers.update_offer(session, locked, terms=body.terms(), actor=actor_of(user), now=now)
        return {"offer_id": locked.id}

    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.store.offer.update:{offer_id}",
            request=_without_secrets(values),
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        if isinstance(error, NotFound):
            raise
        session.refresh(offer)
        status = error.status if isinstance(error, CaasError) else 422
        errors = FormErrors.of(error, aliases=_OFFER_FIELDS)
        return _render_offer(
            request,
            session,
            platform,
            feature,
            offer=offer,
            values=values,
            errors=errors,
            status_code=status,
        )
    flash(request, _OFFER_FLASH.get(action, "flash.offer_saved"))
    return see_other(f"/operator/catalog/{platform.code}/{feature.code}")
