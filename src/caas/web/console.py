"""The operator's console: every order, the catalog with its prices, and any customer's file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, get_args

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session

from caas.catalog import service as catalog
from caas.catalog.models import Country, Feature, Platform, PlatformPrice
from caas.core.api import ClockDep, DbSession
from caas.files import service as files
from caas.sales import service as sales
from caas.sales.schemas import CountryCode
from caas.web.csrf import csrf_protect
from caas.web.orders import (
    STATES,
    customer_file_page,
    order_list,
    order_view,
)
from caas.web.pages import OperatorPage, PageRoute, language_of, render, see_other

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
    codes = [feature.code for feature in features]
    prices = {}
    feature_prices = {}
    for country in countries:
        prices[country.code] = catalog.platform_price(session, platform, country.code)
        for priced in catalog.plan_features(session, platform, country.code, codes):
            feature_prices[(priced.feature.code, country.code)] = priced.plan_net_minor
    return PlatformPrices(platform, prices, features, feature_prices)


@router.get("/catalog")
def catalog_page(request: Request, session: DbSession, _: OperatorPage) -> Response:
    countries = _countries(session)
    platforms = [
        _platform_prices(session, platform, countries)
        for platform in catalog.list_platforms(session)
    ]
    context = {"countries": countries, "platforms": platforms}
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
