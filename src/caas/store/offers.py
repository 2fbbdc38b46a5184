"""Offers: how each feature is sold in each country, as the operator manages them.

An offer is a feature, a country and a kind (`caas.store.rules.OFFER_KINDS`) with its duration,
net price in the country's currency, metered unit, refund policy and the time the car has to
apply a purchase. The operator creates offers, changes their price, policy or deadline, and
withdraws or reinstates them; every change leaves a history row (subject "offer").

A price change applies to what is sold from then on: a purchase line keeps the net, VAT and
gross it was sold at (`caas.store.models.PurchaseLine`), so nothing a customer already bought
changes. An offer is never deleted (purchases, entitlements and subscriptions point at it):
withdrawn, it is no longer sold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.catalog import service as catalog
from caas.catalog.models import Country, Feature
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.history import Actor, record
from caas.store import rules
from caas.store.models import Offer

DEFAULT_APPLY_DEADLINE_SECONDS = 600
APPLY_DEADLINE_RANGE = (30, 86_400)


# --- what the rest of the store reads -----------------------------------------------------


def offers_for(
    session: Session, feature_ids: Sequence[int], country: str, *, active_only: bool = True
) -> list[Offer]:
    """The offers of these features in `country`, ordered by feature, kind and duration."""
    if not feature_ids:
        return []
    query = select(Offer).where(Offer.feature_id.in_(feature_ids), Offer.country == country)
    if active_only:
        query = query.where(Offer.active.is_(True))
    offers = list(session.scalars(query))
    offers.sort(key=offer_order)
    return offers


def offers_of_features(session: Session, feature_ids: Sequence[int]) -> list[Offer]:
    """Every offer (withdrawn ones too) of these features in every country, for the operator."""
    if not feature_ids:
        return []
    offers = list(session.scalars(select(Offer).where(Offer.feature_id.in_(feature_ids))))
    offers.sort(key=lambda offer: (offer.country, *offer_order(offer)))
    return offers


def get_offer(session: Session, offer_id: int, *, lock: bool = False) -> Offer:
    """The offer `offer_id` (locked for update with `lock`); NotFound (field "offer_id") when
    there is none."""
    offer = session.get(Offer, offer_id, with_for_update=lock)
    if offer is None:
        raise NotFound(f"no offer {offer_id}", code="offer.not_found", field="offer_id")
    return offer


def feature_text(feature: Feature, language: str) -> tuple[str, str]:
    """The feature's name and description in `language`, else in English, else the catalog's
    own `name` and `description` (`caas.catalog.service.feature_text`)."""
    return catalog.feature_text(feature, language)


def offer_order(offer: Offer) -> tuple[int, int, int]:
    """Sort key: by feature, then kind and duration in the order of `rules`."""
    kind = rules.OFFER_KINDS.index(offer.kind) if offer.kind in rules.OFFER_KINDS else 99
    durations = rules.DURATIONS.get(offer.kind, ("",))
    duration = durations.index(offer.duration) if offer.duration in durations else 99
    return offer.feature_id, kind, duration


# --- the operator's management -------------------------------------------------------------


@dataclass(frozen=True)
class OfferTerms:
    """What the operator may set on an offer (None: keep it, or the default when creating)."""

    net_minor: int | None = None
    refund_policy: str | None = None
    apply_deadline_seconds: int | None = None


def _check_terms(kind: str, terms: OfferTerms) -> None:
    if terms.net_minor is not None:
        if terms.net_minor < 0:
            raise InvalidInput("a price cannot be negative", field="net_minor")
        if kind == "trial" and terms.net_minor != 0:
            raise InvalidInput(
                "a trial is free: its price is 0", field="net_minor", code="offer.trial_not_free"
            )
        if kind != "trial" and terms.net_minor == 0:
            raise InvalidInput(
                "only a trial is free: give this offer a price",
                field="net_minor",
                code="offer.price_required",
            )
    if terms.refund_policy is not None and terms.refund_policy not in rules.REFUND_POLICIES:
        raise InvalidInput(
            f"the refund policy is one of {', '.join(rules.REFUND_POLICIES)}",
            field="refund_policy",
        )
    low, high = APPLY_DEADLINE_RANGE
    seconds = terms.apply_deadline_seconds
    if seconds is not None and not low <= seconds <= high:
        raise InvalidInput(
            f"the car gets between {low} and {high} seconds to apply a purchase",
            field="apply_deadline_seconds",
        )


def _check_shape(kind: str, duration: str, unit: str | None) -> None:
    if kind not in rules.OFFER_KINDS:
        raise InvalidInput(
            f"the kind of offer is one of {', '.join(rules.OFFER_KINDS)}", field="kind"
        )
    allowed = rules.DURATIONS[kind]
    if duration not in allowed:
        choices = ", ".join(d for d in allowed if d) or "none"
        raise InvalidInput(
            f"a {kind} offer's duration is: {choices}",
            field="duration",
            code="offer.bad_duration",
        )
    if kind == "metered":
        if unit not in rules.METERED_UNITS:
            raise InvalidInput(
                f"a metered offer is priced per {', '.join(rules.METERED_UNITS)}",
                field="unit",
                code="offer.unit_required",
            )
    elif unit is not None:
        raise InvalidInput(
            "only a metered offer has a unit", field="unit", code="offer.unit_not_allowed"
        )


def create_offer(
    session: Session,
    *,
    feature: Feature,
    country: str,
    kind: str,
    duration: str | None,
    unit: str | None,
    terms: OfferTerms,
    actor: Actor,
    now: datetime,
) -> Offer:
    """A new offer of `feature` in `country`; the currency is the country's.

    `duration` None takes the kind's default (a trial lasts `rules.DEFAULT_TRIAL`; kinds with
    one duration take it); the refund policy defaults to `rules.DEFAULT_REFUND_POLICY[kind]`,
    the deadline to apply to `DEFAULT_APPLY_DEADLINE_SECONDS`. One trial per feature and
    country; one offer per feature, country, kind and duration (409 otherwise).
    """
    if duration is None:
        duration = rules.DEFAULT_TRIAL if kind == "trial" else _only_duration(kind)
    _check_shape(kind, duration, unit)
    _check_terms(kind, terms)
    if terms.net_minor is None and kind != "trial":
        raise InvalidInput(
            "give this offer a price", field="net_minor", code="offer.price_required"
        )
    target = session.get(Country, country)
    if target is None:
        raise InvalidInput(f"we do not sell in {country}", field="country")
    if feature.countries is not None and country not in feature.countries:
        raise InvalidInput(
            f"{feature.code} may not be sold in {country} (the feature's countries)",
            field="country",
            code="offer.country_not_allowed",
        )
    existing = session.scalars(
        select(Offer).where(
            Offer.feature_id == feature.id, Offer.country == country, Offer.kind == kind
        )
    ).all()
    if kind == "trial" and existing:
        raise Conflict(
            f"{feature.code} already has a trial in {country} (offer {existing[0].id})",
            code="offer.trial_exists",
            field="kind",
        )
    if any(offer.duration == duration for offer in existing):
        raise Conflict(
            f"{feature.code} already has a {kind} offer"
            f"{f' of {duration}' if duration else ''} in {country}",
            code="offer.exists",
            field="duration",
        )
    offer = Offer(
        feature_id=feature.id,
        country=country,
        kind=kind,
        duration=duration,
        net_minor=terms.net_minor or 0,
        currency=target.currency,
        unit=unit,
        refund_policy=terms.refund_policy or rules.DEFAULT_REFUND_POLICY[kind],
        apply_deadline_seconds=terms.apply_deadline_seconds or DEFAULT_APPLY_DEADLINE_SECONDS,
        active=True,
        created_at=now,
        updated_at=now,
    )
    session.add(offer)
    session.flush()
    record(
        session,
        at=now,
        actor=actor,
        subject_type="offer",
        subject_id=offer.id,
        event="offer.created",
        to_state="active",
        details={
            "feature": feature.code,
            "country": country,
            "kind": kind,
            "duration": duration,
            "net_minor": offer.net_minor,
            "currency": offer.currency,
            "unit": unit,
            "refund_policy": offer.refund_policy,
            "apply_deadline_seconds": offer.apply_deadline_seconds,
        },
    )
    return offer


def _only_duration(kind: str) -> str:
    durations = rules.DURATIONS.get(kind, ("",))
    return durations[0] if len(durations) == 1 else ""


def update_offer(
    session: Session,
    offer: Offer,
    *,
    terms: OfferTerms,
    active: bool | None = None,
    actor: Actor,
    now: datetime,
) -> Offer:
    """Change an offer's price, refund policy or deadline, or withdraw (`active=False`) or
    reinstate it. What customers already bought keeps its price (see the module's docstring).
    A change that changes nothing records nothing."""
    _check_terms(offer.kind, terms)
    changes: dict[str, dict[str, object]] = {}
    for name, value in (
        ("net_minor", terms.net_minor),
        ("refund_policy", terms.refund_policy),
        ("apply_deadline_seconds", terms.apply_deadline_seconds),
    ):
        if value is not None and getattr(offer, name) != value:
            changes[name] = {"from": getattr(offer, name), "to": value}
            setattr(offer, name, value)
    if changes:
        offer.updated_at = now
        record(
            session,
            at=now,
            actor=actor,
            subject_type="offer",
            subject_id=offer.id,
            event="offer.updated",
            details={"changes": changes, "currency": offer.currency},
        )
    if active is not None and active != offer.active:
        set_offer_active(session, offer, active=active, actor=actor, now=now)
    return offer


def set_offer_active(
    session: Session, offer: Offer, *, active: bool, actor: Actor, now: datetime
) -> None:
    """Withdraw an offer from sale (what was bought runs on) or put it back on sale."""
    if offer.active == active:
        return
    before = "active" if offer.active else "withdrawn"
    offer.active = active
    offer.updated_at = now
    record(
        session,
        at=now,
        actor=actor,
        subject_type="offer",
        subject_id=offer.id,
        event="offer.reinstated" if active else "offer.withdrawn",
        from_state=before,
        to_state="active" if active else "withdrawn",
    )
