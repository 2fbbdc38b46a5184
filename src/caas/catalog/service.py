"""Reading the catalog: platforms, their options and prices in a country."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.catalog.models import Country, Feature, FeaturePrice, Platform, PlatformPrice
from caas.core.errors import InvalidInput, NotFound


def get_country(session: Session, code: str) -> Country:
    country = session.get(Country, code)
    if country is None:
        raise InvalidInput(f"we do not sell in {code}", field="country")
    return country


def platform_by_code(session: Session, code: str, *, field: str = "plan.platform") -> Platform:
    platform = session.scalars(select(Platform).where(Platform.code == code)).first()
    if platform is None:
        raise InvalidInput(f"no platform model {code!r}", field=field)
    return platform


def platform_price(session: Session, platform: Platform, country: str) -> PlatformPrice:
    price = session.scalars(
        select(PlatformPrice).where(
            PlatformPrice.platform_id == platform.id, PlatformPrice.country == country
        )
    ).first()
    if price is None:
        raise InvalidInput(f"{platform.name} is not sold in {country}", field="plan.platform")
    return price


@dataclass(frozen=True)
class PricedFeature:
    feature: Feature
    plan_net_minor: int


def plan_features(
    session: Session, platform: Platform, country: str, codes: list[str]
) -> list[PricedFeature]:
    """The platform's options named by `codes`, each with its plan price in `country`."""
    if not codes:
        return []
    rows = session.execute(
        select(Feature, FeaturePrice)
        .join(FeaturePrice, FeaturePrice.feature_id == Feature.id)
        .where(
            Feature.platform_id == platform.id,
            Feature.code.in_(codes),
            FeaturePrice.country == country,
        )
    ).all()
    found = {feature.code: PricedFeature(feature, price.plan_net_minor) for feature, price in rows}
    for index, code in enumerate(codes):
        if code not in found:
            raise InvalidInput(
                f"{platform.name} has no option {code!r} sold in {country}",
                field=f"plan.features.{index}",
            )
    return [found[code] for code in codes]


def list_platforms(session: Session) -> list[Platform]:
    return list(session.scalars(select(Platform).order_by(Platform.name)))


def platform_features(session: Session, platform_id: int) -> list[Feature]:
    return list(
        session.scalars(
            select(Feature).where(Feature.platform_id == platform_id).order_by(Feature.name)
        )
    )


def get_platform(session: Session, platform_id: int) -> Platform:
    platform = session.get(Platform, platform_id)
    if platform is None:
        raise NotFound("no such platform")
    return platform
