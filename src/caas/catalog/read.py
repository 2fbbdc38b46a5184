"""Reading the catalog for its public API and the manuals, in a fixed number of queries."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing import vat
from caas.catalog import service as catalog
from caas.catalog.manuals import ManualModel
from caas.catalog.models import Country, Feature, FeaturePrice, Platform, PlatformPrice
from caas.catalog.schemas import (
    FeatureRead,
    MaintenancePlanRead,
    OptionRead,
    PlatformPriceRead,
    PlatformRead,
    PriceRead,
)
from caas.core.errors import NotFound
from caas.core.money import Money, percent_of
from caas.core.schemas import MoneyRead


def manual_url(platform_code: str, language: str | None = None) -> str:
    url = f"/api/v1/platforms/{platform_code}/manual.pdf"
    return f"{url}?lang={language}" if language else url


def _price(country: Country, net_minor: int, vat_rate_bp: int) -> PriceRead:
    locale = country.language
    vat_minor = percent_of(net_minor, vat_rate_bp)
    return PriceRead(
        country=country.code,
        net=MoneyRead.of(Money(net_minor, country.currency), locale),
        vat_rate_percent=f"{vat_rate_bp / 100:.2f}",
        vat=MoneyRead.of(Money(vat_minor, country.currency), locale),
        total=MoneyRead.of(Money(net_minor + vat_minor, country.currency), locale),
    )


def price_list(session: Session, *, at: datetime, country: str | None = None) -> list[PlatformRead]:
    """Every platform with its options, maintenance plan and prices with the VAT in force
    at `at` (in `country` only, if given; an unknown country is a 422 on `country`)."""
    if country is not None:
        countries = {country: catalog.get_country(session, country)}
    else:
        countries = {c.code: c for c in session.scalars(select(Country).order_by(Country.code))}
    rates = {code: vat.rate_at(session, code, at) for code in countries}
    platforms = catalog.list_platforms(session)
    features = session.scalars(select(Feature).order_by(Feature.platform_id, Feature.name)).all()
    platform_prices: dict[int, list[PlatformPrice]] = defaultdict(list)
    for price in session.scalars(
        select(PlatformPrice)
        .where(PlatformPrice.country.in_(countries))
        .order_by(PlatformPrice.country)
    ):
        platform_prices[price.platform_id].append(price)
    feature_prices: dict[int, list[FeaturePrice]] = defaultdict(list)
    for feature_price in session.scalars(
        select(FeaturePrice)
        .where(FeaturePrice.country.in_(countries))
        .order_by(FeaturePrice.country)
    ):
        feature_prices[feature_price.feature_id].append(feature_price)
    options: dict[int, list[OptionRead]] = defaultdict(list)
    for feature in features:
        options[feature.platform_id].append(
            OptionRead(
                code=feature.code,
                name=feature.name,
                description=feature.description,
                category=feature.category,
                needs_hardware=feature.needs_hardware,
                plan_prices=[
                    _price(countries[p.country], p.plan_net_minor, rates[p.country])
                    for p in feature_prices[feature.id]
                ],
            )
        )
    return [
        PlatformRead(
            code=platform.code,
            name=platform.name,
            description=platform.description,
            software_version=platform.software_version,
            maintenance_plan=MaintenancePlanRead(
                every_km=platform.service_every_km, every_months=platform.service_every_months
            ),
            prices=[
                PlatformPriceRead(
                    **_price(countries[p.country], p.net_minor, rates[p.country]).model_dump(),
                    maintenance_net=MoneyRead.of(
                        Money(p.maintenance_net_minor, countries[p.country].currency),
                        countries[p.country].language,
                    ),
                )
                for p in platform_prices[platform.id]
            ],
            options=options[platform.id],
            manual_url=manual_url(platform.code),
        )
        for platform in platforms
    ]


def manual_model(session: Session, platform_code: str) -> ManualModel:
    """What the manual of `platform_code` is written from; 404 for an unknown model."""
    platform = session.scalars(select(Platform).where(Platform.code == platform_code)).first()
    if platform is None:
        raise NotFound(f"no platform model {platform_code!r}", code="platform.not_found")
    return ManualModel.of(platform, catalog.platform_features(session, platform.id))


def feature_read(feature: Feature, platform: Platform, language: str) -> FeatureRead:
    """A feature as the API shows it, its name and description in `language` (or English)."""
    name, description = catalog.feature_text(feature, language)
    return FeatureRead(
        id=feature.id,
        platform=platform.code,
        code=feature.code,
        name=name,
        description=description,
        names=dict(feature.names or {}),
        descriptions=dict(feature.descriptions or {}),
        category=feature.category,
        needs_hardware=feature.needs_hardware,
        min_software_version=feature.min_software_version,
        requires=list(feature.requires or []),
        conflicts=list(feature.conflicts or []),
        countries=None if feature.countries is None else list(feature.countries),
        requires_maintenance=feature.requires_maintenance,
        parameters=dict(feature.parameters or {}),
        active=feature.active,
    )
