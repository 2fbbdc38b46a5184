"""The catalog's service: platforms, their options and prices in a country; the operator's
changes to features (validated, recorded in the history)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.catalog import rules
from caas.catalog.models import Country, Feature, FeaturePrice, Platform, PlatformPrice
from caas.catalog.schemas import FeatureCreate, FeatureUpdate
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.history import Actor, record


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
    found = {
        feature.code: PricedFeature(feature, price.plan_net_minor)
        for feature, price in rows
        if feature.active and (feature.countries is None or country in feature.countries)
    }
    for index, code in enumerate(codes):
        if code not in found:
            raise InvalidInput(
                f"{platform.name} has no option {code!r} sold in {country}",
                field=f"plan.features.{index}",
            )
        feature = found[code].feature
        missing = [needed for needed in feature.requires if needed not in codes]
        if missing:
            raise InvalidInput(
                f"{feature.name} needs {', '.join(missing)} in the same plan",
                field=f"plan.features.{index}",
                code="plan.feature_requires",
            )
        clashing = [other for other in feature.conflicts if other in codes]
        if clashing:
            raise InvalidInput(
                f"{feature.name} cannot be combined with {', '.join(clashing)}",
                field=f"plan.features.{index}",
                code="plan.feature_conflicts",
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


def feature_text(feature: Feature, language: str) -> tuple[str, str]:
    """The feature's name and description in `language`, else in English, else the catalog's
    own `name` and `description`."""
    names = feature.names or {}
    descriptions = feature.descriptions or {}
    fallback = rules.REQUIRED_LANGUAGE
    name = names.get(language) or names.get(fallback) or feature.name
    description = descriptions.get(language) or descriptions.get(fallback) or feature.description
    return name, description


# --- the operator's management of features ------------------------------------------------


def get_feature(session: Session, platform: Platform, code: str, *, lock: bool = False) -> Feature:
    """The feature `code` of `platform`; NotFound otherwise."""
    query = select(Feature).where(Feature.platform_id == platform.id, Feature.code == code)
    if lock:
        query = query.with_for_update()
    feature = session.scalars(query).first()
    if feature is None:
        raise NotFound(f"{platform.name} has no feature {code!r}", code="feature.not_found")
    return feature


def platform_or_404(session: Session, code: str) -> Platform:
    platform = session.scalars(select(Platform).where(Platform.code == code.upper())).first()
    if platform is None:
        raise NotFound(f"no platform model {code!r}", code="platform.not_found")
    return platform


def _check_requirements(
    session: Session,
    platform: Platform,
    code: str,
    *,
    requires: list[str],
    conflicts: list[str],
) -> None:
    # The platform's row is the lock: two operators changing requirements at once cannot
    # build a cycle between them (each sees the other's committed change).
    session.execute(select(Platform.id).where(Platform.id == platform.id).with_for_update())
    siblings = session.scalars(select(Feature).where(Feature.platform_id == platform.id)).all()
    problem = rules.requirement_problem(
        code,
        requires=requires,
        conflicts=conflicts,
        platform={f.code: (list(f.requires or []), list(f.conflicts or [])) for f in siblings},
    )
    if problem is not None:
        raise InvalidInput(problem.reason, field=problem.field, code=problem.code)


def _check_countries(session: Session, countries: list[str] | None) -> None:
    if countries is None:
        return
    known = set(session.scalars(select(Country.code)))
    for index, country in enumerate(countries):
        if country not in known:
            raise InvalidInput(
                f"we do not sell in {country}",
                field=f"countries.{index}",
                code="feature.unknown_country",
            )


def _snapshot(feature: Feature) -> dict[str, Any]:
    return {name: getattr(feature, name) for name in _EDITABLE}


_EDITABLE = (
    "names",
    "descriptions",
    "category",
    "min_software_version",
    "requires",
    "conflicts",
    "countries",
    "requires_maintenance",
    "parameters",
)


def create_feature(
    session: Session, platform: Platform, body: FeatureCreate, *, actor: Actor, now: datetime
) -> Feature:
    """A new feature of `platform`, on sale (it has no offers yet: see `caas.store.offers`)."""
    exists = session.scalars(
        select(Feature.id).where(Feature.platform_id == platform.id, Feature.code == body.code)
    ).first()
    if exists is not None:
        raise Conflict(
            f"{platform.name} already has a feature {body.code!r}",
            code="feature.exists",
            field="code",
        )
    requires, conflicts = body.requires or [], body.conflicts or []
    _check_requirements(session, platform, body.code, requires=requires, conflicts=conflicts)
    _check_countries(session, body.countries)
    names, descriptions = dict(body.names), dict(body.descriptions)
    feature = Feature(
        platform_id=platform.id,
        code=body.code,
        name=names[rules.REQUIRED_LANGUAGE],
        description=descriptions[rules.REQUIRED_LANGUAGE],
        names=names,
        descriptions=descriptions,
        category=body.category,
        needs_hardware=body.needs_hardware,
        min_software_version=body.min_software_version,
        requires=requires,
        conflicts=conflicts,
        countries=body.countries,
        requires_maintenance=bool(body.requires_maintenance),
        parameters=dict(body.parameters or {}),
        active=True,
    )
    session.add(feature)
    session.flush()
    record(
        session,
        at=now,
        actor=actor,
        subject_type="feature",
        subject_id=feature.id,
        event="feature.created",
        to_state="active",
        details={"platform": platform.code, **_snapshot(feature)},
    )
    return feature


def update_feature(
    session: Session, feature: Feature, body: FeatureUpdate, *, actor: Actor, now: datetime
) -> Feature:
    """Change what `body` sends (see `FeatureUpdate`); withdraw or reinstate with `active`.
    Records what changed, from and to; a change that changes nothing records nothing."""
    sent = body.model_dump(exclude_unset=True)
    for name in ("names", "descriptions", "category", "requires", "conflicts"):
        if name in sent and sent[name] is None:
            raise InvalidInput(f"{name} cannot be null", field=name)
    if "requires" in sent or "conflicts" in sent:
        platform = session.get(Platform, feature.platform_id)
        assert platform is not None
        _check_requirements(
            session,
            platform,
            feature.code,
            requires=sent.get("requires", list(feature.requires or [])),
            conflicts=sent.get("conflicts", list(feature.conflicts or [])),
        )
    if "countries" in sent:
        _check_countries(session, sent["countries"])
    if sent.get("requires_maintenance", False) is None:
        sent["requires_maintenance"] = False
    if "parameters" in sent and sent["parameters"] is None:
        sent["parameters"] = {}
    changes: dict[str, dict[str, Any]] = {}
    for name in _EDITABLE:
        if name in sent and getattr(feature, name) != sent[name]:
            changes[name] = {"from": getattr(feature, name), "to": sent[name]}
            setattr(feature, name, sent[name])
    if "names" in changes:
        feature.name = feature.names[rules.REQUIRED_LANGUAGE]
    if "descriptions" in changes:
        feature.description = feature.descriptions[rules.REQUIRED_LANGUAGE]
    if changes:
        record(
            session,
            at=now,
            actor=actor,
            subject_type="feature",
            subject_id=feature.id,
            event="feature.updated",
            details={"code": feature.code, "changes": changes},
        )
    active = sent.get("active")
    if active is not None and active != feature.active:
        feature.active = active
        record(
            session,
            at=now,
            actor=actor,
            subject_type="feature",
            subject_id=feature.id,
            event="feature.reinstated" if active else "feature.withdrawn",
            from_state="withdrawn" if active else "active",
            to_state="active" if active else "withdrawn",
            details={"code": feature.code},
        )
    return feature
