"""Purchases: quote, authorise, deliver over the air, capture on `applied`, void on refusal.

A purchase goes like a sale's payment, in two transactions around the provider's call:

1. `begin_purchase` validates every line (eligibility, cart included; dates; extensions),
   prices it, and writes the purchase `authorising` with its lines and, when there is
   something to pay, the store payment (`pending`), under the customer's Idempotency-Key.
   The caller commits: a retry with the key finds this row; a refused line writes nothing.
2. `drive_purchase` authorises at the provider outside any lock, then, in a new
   transaction, fails the purchase (payment refused) or delivers it: entitlements
   `delivering`, a subscription for subscription offers, ONE new configuration version, and
   a deadline job. A retry continues from where the purchase stands.

The car's answer settles it (`configuration_answered`, on the car's hot path: no provider
call, a couple of queries): `applied` activates the entitlements and queues the capture
(`store.capture`: the purchase is `active` once the money is in, invoiced by billing);
`rejected`, or silence past the deadline (`store.purchase_deadline`), revokes them, queues
the void (`store.void`) and issues a configuration without them: `refunded`, with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.billing import rules as billing_rules
from caas.billing import service as billing
from caas.billing import vat
from caas.billing.models import Payment
from caas.billing.provider import (
    PaymentProvider,
    ProviderError,
    ProviderTimeout,
    SandboxProvider,
)
from caas.catalog import service as catalog
from caas.catalog.models import Feature
from caas.core.clock import Clock
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.faults import kill_point
from caas.core.history import Actor, HistoryEntry, record
from caas.core.idempotency import fingerprint
from caas.core.outbox import Handler, RetryLater, enqueue
from caas.core.settings import Settings
from caas.notifications.service import notify_user
from caas.ota.models import ConfigurationVersion
from caas.ota.service import lock_vehicle
from caas.sales import service as sales
from caas.sales.models import Customer
from caas.store import eligibility, entitlements
from caas.store import rules as store_rules
from caas.store.models import (
    Entitlement,
    Occurrence,
    Offer,
    Purchase,
    PurchaseLine,
    Subscription,
)
from caas.store.schemas import PurchaseItem
from caas.vehicles.models import Vehicle

log = structlog.get_logger(__name__)

CAPTURE_TOPIC: Final = "store.capture"
VOID_TOPIC: Final = "store.void"
DEADLINE_TOPIC: Final = "store.purchase_deadline"
PAYMENT_TOPIC: Final = "store.purchase_payment"
# When a purchase whose request ended without an answer from the provider (a timeout, a
# crash) is looked at again: its payment settled meanwhile by the provider's event.
PAYMENT_FOLLOW_UP: Final = timedelta(seconds=60)
SUBJECT: Final = "purchase"
PLATFORM: Final = Actor.system("store")

# The entitlement's source for each kind of offer.
SOURCE_OF_KIND: Final[dict[str, str]] = {
    "trial": "trial",
    "window": "purchase",
    "custom": "purchase",
    "subscription": "subscription",
    "permanent": "permanent",
    "metered": "metered",
}
# Kinds whose line costs nothing at checkout (metered use is invoiced monthly).
FREE_AT_CHECKOUT: Final = frozenset({"trial", "metered"})
LONGEST_CUSTOM: Final = timedelta(days=3 * 366)
# A custom window may start this little in the past (the customer's clock, the request's time).
START_TOLERANCE: Final = timedelta(minutes=5)
# Subscriptions that still renew: a second one of the same option on the car is refused.
LIVE_SUBSCRIPTIONS: Final = ("active", "past_due")

KIND_LABELS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "trial": "free trial",
        "window": "window",
        "custom": "own dates",
        "subscription": "subscription",
        "permanent": "for the car's life",
        "metered": "pay per use",
    },
    "es": {
        "trial": "prueba gratuita",
        "window": "periodo",
        "custom": "fechas a medida",
        "subscription": "suscripción",
        "permanent": "para siempre",
        "metered": "pago por uso",
    },
}

DURATION_LABELS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "1D": "1 day",
        "7D": "1 week",
        "14D": "2 weeks",
        "1M": "1 month",
        "1Y": "1 year",
        "3Y": "3 years",
    },
    "es": {
        "1D": "1 día",
        "7D": "1 semana",
        "14D": "2 semanas",
        "1M": "1 mes",
        "1Y": "1 año",
        "3Y": "3 años",
    },
}


# --- quoting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotedLine:
    offer: Offer
    feature: Feature
    name: str
    description: str
    valid_from: datetime
    valid_until: datetime | None
    extends: bool
    price: store_rules.PricedLine
    spending_cap_minor: int | None


@dataclass(frozen=True)
class Quote:
    vehicle: Vehicle
    customer: Customer
    currency: str
    lines: list[QuotedLine]

    @property
    def net_minor(self) -> int:
        return sum(line.price.net_minor for line in self.lines)

    @property
    def vat_minor(self) -> int:
        return sum(line.price.vat_minor for line in self.lines)

    @property
    def gross_minor(self) -> int:
        return sum(line.price.gross_minor for line in self.lines)


def customer_car(session: Session, user: User, vin: str) -> tuple[Customer, Vehicle]:
    """The customer of `user` and their car `vin`; anyone else's car is the same 404 as none."""
    customer = sales.customer_of_user(session, user)
    vehicle = session.scalars(select(Vehicle).where(Vehicle.vin == vin.upper())).first()
    if vehicle is None or vehicle.owner_customer_id != customer.id:
        raise NotFound("no car with this VIN", code="vehicle.not_found")
    return customer, vehicle


def quote(
    session: Session,
    *,
    vehicle: Vehicle,
    customer: Customer,
    items: Sequence[PurchaseItem],
    at: datetime,
    language: str,
) -> Quote:
    """Validate and price a cart for the car at `at`; writes nothing.

    422 per field (`items.<i>.<field>`) for input that cannot be right (an unknown offer, a
    custom end before its start, a planned start in the past, a cap on a non-metered offer,
    the same option twice); 409 `store.not_eligible.<reason>` when the car cannot get a line
    (requirements and conflicts count the rest of the cart); 409 `store.already_subscribed`
    for a second subscription of the same option. A window bought while the option runs
    starts where the running one ends (an extension, never a duplicate).
    """
    offers = _offers_of(session, vehicle, items)
    features = {
        feature.id: feature
        for feature in session.scalars(
            select(Feature).where(Feature.id.in_({offer.feature_id for offer in offers}))
        )
    }
    codes = [features[offer.feature_id].code for offer in offers]
    for index, code in enumerate(codes):
        if code in codes[:index]:
            raise InvalidInput(
                f"{code} is twice in the cart: buy one window of it, or a longer one",
                field=f"items.{index}.offer_id",
                code="store.duplicate_option",
            )
    facts = eligibility.car_facts(session, vehicle, at=at)
    names = {code: catalog.feature_text(f, language)[0] for code, f in facts.platform.items()}
    vat_rate_bp = vat.rate_at(session, customer.country, at)
    lines: list[QuotedLine] = []
    for index, (item, offer) in enumerate(zip(items, offers, strict=True)):
        feature = features[offer.feature_id]
        cart = [code for code in codes if code != feature.code]
        refused = eligibility.refusals_for(
            facts, feature=feature, offer=offer, customer=customer, cart=cart
        )
        if refused:
            first = refused[0]
            raise Conflict(
                eligibility.explain(first, language, names=names),
                code=f"store.not_eligible.{first.reason}",
                field=f"items.{index}.offer_id",
                refusals=[
                    {
                        "reason": refusal.reason,
                        "message": eligibility.explain(refusal, language, names=names),
                        "details": refusal.details,
                    }
                    for refusal in refused
                ],
            )
        if offer.kind == "subscription":
            _refuse_second_subscription(session, vehicle, feature, index)
        lines.append(
            _line(
                session,
                vehicle=vehicle,
                offer=offer,
                feature=feature,
                item=item,
                index=index,
                at=at,
                name=names.get(feature.code, feature.name),
                language=language,
                vat_rate_bp=vat_rate_bp,
            )
        )
    return Quote(vehicle, customer, offers[0].currency, lines)


def _offers_of(session: Session, vehicle: Vehicle, items: Sequence[PurchaseItem]) -> list[Offer]:
    found = {
        offer.id: offer
        for offer in session.scalars(
            select(Offer)
            .join(Feature, Feature.id == Offer.feature_id)
            .where(
                Offer.id.in_({item.offer_id for item in items}),
                Feature.platform_id == vehicle.platform_id,
            )
        )
    }
    offers: list[Offer] = []
    for index, item in enumerate(items):
        offer = found.get(item.offer_id)
        if offer is None:
            raise InvalidInput(
                f"no offer {item.offer_id} for this car",
                field=f"items.{index}.offer_id",
                code="store.offer_not_found",
            )
        offers.append(offer)
    if len({offer.currency for offer in offers}) > 1:
        raise InvalidInput(
            "the offers of one purchase share a currency", field="items", code="store.currencies"
        )
    return offers


def _refuse_second_subscription(
    session: Session, vehicle: Vehicle, feature: Feature, index: int
) -> None:
    running = session.scalar(
        select(Subscription.id).where(
            Subscription.vehicle_id == vehicle.id,
            Subscription.code == feature.code,
            Subscription.state.in_(LIVE_SUBSCRIPTIONS),
        )
    )
    if running is not None:
        raise Conflict(
            f"the car already has a subscription to {feature.code}",
            code="store.already_subscribed",
            field=f"items.{index}.offer_id",
            subscription_id=running,
        )


def _paying_until(session: Session, vehicle: Vehicle, feature: Feature) -> datetime | None:
    """Where the car's purchases of `feature` whose payment is still being authorised end."""
    return session.scalar(
        select(func.max(PurchaseLine.valid_until))
        .join(Purchase, Purchase.id == PurchaseLine.purchase_id)
        .where(
            Purchase.vehicle_id == vehicle.id,
            Purchase.state == "authorising",
            PurchaseLine.code == feature.code,
        )
    )


def _line(
    session: Session,
    *,
    vehicle: Vehicle,
    offer: Offer,
    feature: Feature,
    item: PurchaseItem,
    index: int,
    at: datetime,
    name: str,
    language: str,
    vat_rate_bp: int,
) -> QuotedLine:
    """One line's window and price, or a 422 naming the field at fault."""
    field = f"items.{index}"
    kind = offer.kind
    if item.spending_cap_minor is not None and kind != "metered":
        raise InvalidInput(
            "only a metered option takes a spending cap", field=f"{field}.spending_cap_minor"
        )
    if item.ends_at is not None and kind != "custom":
        raise InvalidInput(
            f"a {kind} offer ends by itself: only custom dates take an end",
            field=f"{field}.ends_at",
        )
    extends = False
    net = offer.net_minor
    if kind == "custom":
        start = max(item.starts_at or at, at)
        if item.starts_at is not None and item.starts_at < at - START_TOLERANCE:
            raise InvalidInput("the start is in the past", field=f"{field}.starts_at")
        if item.ends_at is None:
            raise InvalidInput("own dates need an end", field=f"{field}.ends_at")
        if item.ends_at <= start:
            raise InvalidInput("the end must come after the start", field=f"{field}.ends_at")
        if item.ends_at - start > LONGEST_CUSTOM:
            raise InvalidInput("own dates span three years at most", field=f"{field}.ends_at")
        until: datetime | None = item.ends_at
        net = offer.net_minor * math.ceil((item.ends_at - start) / timedelta(days=1))
    else:
        if item.starts_at is not None and item.starts_at <= at:
            raise InvalidInput("a planned start must be in the future", field=f"{field}.starts_at")
        start = item.starts_at or at
        if item.starts_at is None and kind != "metered":
            ends = entitlements.coverage_end(session, vehicle.id, feature.id, at=at)
            if ends is not None:
                start, extends = ends, True
            # A purchase of it still being paid for has no entitlement yet: chain after it.
            paying = _paying_until(session, vehicle, feature)
            if paying is not None and paying > start:
                start, extends = paying, True
        until = store_rules.add_duration(start, offer.duration) if offer.duration else None
        if kind in FREE_AT_CHECKOUT:
            net = 0
    labels = KIND_LABELS.get(language, KIND_LABELS["en"])
    durations = DURATION_LABELS.get(language, DURATION_LABELS["en"])
    period = f"{start:%Y-%m-%d} – {until:%Y-%m-%d}" if until else f"{start:%Y-%m-%d} –"
    duration = f" {durations.get(offer.duration, offer.duration)}" if offer.duration else ""
    return QuotedLine(
        offer=offer,
        feature=feature,
        name=name,
        description=f"{name}, {labels[kind]}{duration} ({period})"[:200],
        valid_from=start,
        valid_until=until,
        extends=extends,
        price=store_rules.price_line(net, vat_rate_bp),
        spending_cap_minor=item.spending_cap_minor,
    )


# --- buying ---------------------------------------------------------------------------------


def request_hash(vin: str, items: Sequence[PurchaseItem], payment_method: str) -> str:
    return fingerprint(
        {
            "vin": vin.upper(),
            "items": [item.model_dump(mode="json") for item in items],
            "payment_method": payment_method,
        }
    )


def _by_key(session: Session, customer_id: int, key: str, digest: str) -> Purchase | None:
    purchase = session.scalars(
        select(Purchase).where(Purchase.customer_id == customer_id, Purchase.idempotency_key == key)
    ).first()
    if purchase is not None and purchase.request_hash != digest:
        raise Conflict(
            "this Idempotency-Key was already used for a different purchase",
            code="idempotency.key_reused",
        )
    return purchase


def begin_purchase(
    session: Session,
    *,
    user: User,
    vin: str,
    items: Sequence[PurchaseItem],
    payment_method: str,
    idempotency_key: str,
    now: datetime,
) -> Purchase:
    """The purchase this key already started, or a new one `authorising` (see the module).

    Concurrent requests for the car wait for each other on its row, so a double click with
    one key finds the first one's purchase instead of writing a second.
    """
    customer, vehicle = customer_car(session, user, vin)
    digest = request_hash(vehicle.vin, items, payment_method)
    found = _by_key(session, customer.id, idempotency_key, digest)
    if found is not None:
        return found
    session.execute(select(Vehicle.id).where(Vehicle.id == vehicle.id).with_for_update())
    found = _by_key(session, customer.id, idempotency_key, digest)
    if found is not None:
        return found
    priced = quote(
        session, vehicle=vehicle, customer=customer, items=items, at=now, language=user.language
    )
    actor = Actor(kind=user.role.value, label=user.email, user_id=user.id)
    purchase = Purchase(
        customer_id=customer.id,
        vehicle_id=vehicle.id,
        state="authorising",
        idempotency_key=idempotency_key,
        request_hash=digest,
        currency=priced.currency,
        net_minor=priced.net_minor,
        vat_minor=priced.vat_minor,
        gross_minor=priced.gross_minor,
        payment_method=payment_method,
        created_at=now,
        updated_at=now,
    )
    session.add(purchase)
    session.flush()
    for line in priced.lines:
        session.add(
            PurchaseLine(
                purchase_id=purchase.id,
                offer_id=line.offer.id,
                code=line.feature.code,
                kind=line.offer.kind,
                description=line.description,
                valid_from=line.valid_from,
                valid_until=line.valid_until,
                net_minor=line.price.net_minor,
                vat_rate_bp=line.price.vat_rate_bp,
                vat_minor=line.price.vat_minor,
                gross_minor=line.price.gross_minor,
                spending_cap_minor=line.spending_cap_minor,
            )
        )
    if priced.gross_minor > 0:
        payment = billing.begin_store_payment(
            session,
            customer_id=customer.id,
            kind="option",
            lines=[
                billing_rules.LineDraft(
                    line.description,
                    line.price.net_minor,
                    line.price.vat_rate_bp,
                    line.price.vat_minor,
                )
                for line in priced.lines
                if line.price.gross_minor > 0
            ],
            currency=priced.currency,
            country=customer.country,
            payment_method=payment_method,
            idempotency_key=f"purchase:{idempotency_key}"[:200],
            actor=actor,
            now=now,
            details={"purchase_id": purchase.id},
        )
        purchase.payment_id = payment.id
    enqueue(
        session,
        topic=PAYMENT_TOPIC,
        payload={"purchase_id": purchase.id},
        dedupe_key=f"{PAYMENT_TOPIC}:{purchase.id}",
        now=now,
        run_after=now + PAYMENT_FOLLOW_UP,
    )
    _record(
        session,
        purchase,
        "purchase.authorising",
        actor=actor,
        now=now,
        to_state="authorising",
        details={
            "vin": vehicle.vin,
            "lines": [
                {"code": line.feature.code, "kind": line.offer.kind, "extends": line.extends}
                for line in priced.lines
            ],
            "gross_minor": priced.gross_minor,
            "currency": priced.currency,
        },
    )
    return purchase


def drive_purchase(
    session: Session,
    purchase: Purchase,
    *,
    provider: PaymentProvider,
    actor: Actor,
    now: datetime,
    items: Sequence[PurchaseItem] | None = None,
    payment_method: str | None = None,
) -> Purchase:
    """Take a committed purchase as far as it goes now: authorise its payment (outside any
    lock), then fail it or deliver it to the car. Other states are returned as they are; a
    payment the provider has not confirmed leaves it `authorising` (a retry with the key, or
    the `store.purchase_payment` job, continues it).

    The purchase keeps its card reference and lines: `items` and `payment_method` (the
    request's, which the key's hash already ties to it) are not needed any more and are
    ignored; they remain for callers written before."""
    del items, payment_method
    if purchase.state != "authorising":
        return purchase
    payment: Payment | None = None
    if purchase.payment_id is not None:
        payment = billing.authorise_payment(
            session,
            session.get_one(Payment, purchase.payment_id),
            payment_method=purchase.payment_method or "",
            provider=provider,
            actor=actor,
            now=now,
        )
    purchase = _lock(session, purchase.id)
    if purchase.state != "authorising":
        return purchase
    if payment is None or payment.state == "authorised":
        _deliver(session, purchase, actor=actor, now=now)
    elif payment.state == "failed":
        purchase.failure_code = payment.failure_code
        purchase.failure_reason = payment.failure_reason
        _move(session, purchase, "failed", actor=actor, now=now)
    return purchase


def _deliver(session: Session, purchase: Purchase, *, actor: Actor, now: datetime) -> None:
    """Paid (or nothing to pay): the entitlements on their way to the car in one version."""
    from caas.ota.service import request_configuration

    vehicle = session.get_one(Vehicle, purchase.vehicle_id)
    lines = _lines(session, purchase.id)
    offers = {
        offer.id: offer
        for offer in session.scalars(
            select(Offer).where(Offer.id.in_({line.offer_id for line in lines}))
        )
    }
    features = {
        feature.id: feature
        for feature in session.scalars(
            select(Feature).where(Feature.id.in_({o.feature_id for o in offers.values()}))
        )
    }
    for line in lines:
        offer = offers[line.offer_id]
        subscription_id = None
        if line.kind == "subscription":
            subscription_id = _subscribe(session, purchase, line, actor=actor, now=now)
        granted = entitlements.grant(
            session,
            vehicle=vehicle,
            feature=features[offer.feature_id],
            source=SOURCE_OF_KIND[line.kind],
            valid_from=line.valid_from,
            valid_until=line.valid_until,
            state="delivering",
            customer_id=purchase.customer_id,
            offer_id=offer.id,
            purchase_id=purchase.id,
            subscription_id=subscription_id,
            spending_cap_minor=line.spending_cap_minor,
            actor=actor,
            now=now,
        )
        line.entitlement_id = granted.id
    version = request_configuration(
        session, vehicle, reason=f"purchase {purchase.id}", actor=actor, now=now
    )
    seconds = min(offer.apply_deadline_seconds for offer in offers.values())
    purchase.configuration_version = version.version
    purchase.deadline_at = now + timedelta(seconds=seconds)
    enqueue(
        session,
        topic=DEADLINE_TOPIC,
        payload={"purchase_id": purchase.id},
        dedupe_key=f"{DEADLINE_TOPIC}:{purchase.id}",
        now=now,
        run_after=purchase.deadline_at,
    )
    _move(
        session,
        purchase,
        "delivering",
        actor=actor,
        now=now,
        details={"version": version.version, "deadline_at": purchase.deadline_at.isoformat()},
    )


def _subscribe(
    session: Session, purchase: Purchase, line: PurchaseLine, *, actor: Actor, now: datetime
) -> int:
    """The subscription a subscription line starts: its first period is the line's window;
    `caas.store.subscriptions` renews it."""
    assert line.valid_until is not None
    subscription = Subscription(
        vehicle_id=purchase.vehicle_id,
        customer_id=purchase.customer_id,
        offer_id=line.offer_id,
        code=line.code,
        state="active",
        payment_method=purchase.payment_method or "",
        current_period_start=line.valid_from,
        current_period_end=line.valid_until,
        cancel_at_period_end=False,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(subscription)
    session.flush()
    record(
        session,
        at=now,
        actor=actor,
        subject_type="subscription",
        subject_id=subscription.id,
        customer_id=purchase.customer_id,
        event="subscription.started",
        to_state="active",
        details={"purchase_id": purchase.id, "code": line.code},
    )
    return subscription.id


# --- the car's answer -------------------------------------------------------------------------


def configuration_answered(
    session: Session, vehicle: Vehicle, version: ConfigurationVersion, *, now: datetime
) -> None:
    """The car answered `version` (its state is now applied, rejected or deferred): settle the
    purchases it carries (capture on applied; void or refund on rejected). Called by
    `caas.ota.service.record_report` in its transaction, which holds the car's row already
    (`lock_vehicle`); the purchases are locked in the order of their ids. Must stay fast (the
    hot path)."""
    if version.state == "applied":
        # A newer version carries the entitlements still on their way too.
        settled = list(
            session.scalars(
                select(Purchase)
                .where(
                    Purchase.vehicle_id == vehicle.id,
                    Purchase.state == "delivering",
                    Purchase.configuration_version <= version.version,
                )
                .order_by(Purchase.id)
                .with_for_update()
            )
        )
        if not settled:
            return
        actor = Actor(kind="vehicle", label=vehicle.vin)
        for entitlement in session.scalars(
            select(Entitlement).where(
                Entitlement.purchase_id.in_([purchase.id for purchase in settled]),
                Entitlement.state == "delivering",
            )
        ):
            entitlements.activate(session, entitlement, actor=actor, now=now)
        for purchase in settled:
            enqueue(
                session,
                topic=CAPTURE_TOPIC,
                payload={"purchase_id": purchase.id},
                dedupe_key=f"{CAPTURE_TOPIC}:{purchase.id}",
                now=now,
            )
    elif version.state == "rejected":
        refused = list(
            session.scalars(
                select(Purchase)
                .where(
                    Purchase.vehicle_id == vehicle.id,
                    Purchase.state == "delivering",
                    Purchase.configuration_version == version.version,
                )
                .order_by(Purchase.id)
                .with_for_update()
            )
        )
        if not refused:
            return
        actor = Actor(kind="vehicle", label=vehicle.vin)
        reason = version.report_reason or "the car refused the change"
        for purchase in refused:
            _refund(session, purchase, code="car_rejected", reason=reason, actor=actor, now=now)
        _reconfigure(session, vehicle, reason="purchase refused by the car", actor=actor, now=now)
    # deferred: the purchase waits for the car to be parked (its read model says so).


def _reconfigure(
    session: Session, vehicle: Vehicle, *, reason: str, actor: Actor, now: datetime
) -> None:
    from caas.ota.service import request_configuration

    request_configuration(session, vehicle, reason=reason, actor=actor, now=now)


def _refund(
    session: Session,
    purchase: Purchase,
    *,
    code: str,
    reason: str,
    actor: Actor,
    now: datetime,
    tell: bool = True,
) -> None:
    """The car will not run it: entitlements revoked, subscriptions stopped, the hold released
    (`store.void`), the customer told (unless the caller tells them its own way). The caller
    issues the new configuration."""
    subscriptions: set[int] = set()
    for entitlement in session.scalars(
        select(Entitlement).where(
            Entitlement.purchase_id == purchase.id,
            Entitlement.state.in_(store_rules.COUNTING_STATES),
        )
    ):
        entitlements.revoke(session, entitlement, reason=code, actor=actor, now=now)
        if entitlement.subscription_id is not None:
            subscriptions.add(entitlement.subscription_id)
    _stop_subscriptions(
        session,
        subscriptions,
        code=code,
        actor=actor,
        now=now,
        details={"purchase_id": purchase.id},
    )
    if purchase.payment_id is not None:
        enqueue(
            session,
            topic=VOID_TOPIC,
            payload={"purchase_id": purchase.id},
            dedupe_key=f"{VOID_TOPIC}:{purchase.id}",
            now=now,
        )
    purchase.failure_code = code
    purchase.failure_reason = reason[:300]
    _move(session, purchase, "refunded", actor=actor, now=now, details={"reason": code})
    if tell:
        _tell(session, purchase, "store.purchase_refunded", now=now, reason=reason)


def _stop_subscriptions(
    session: Session,
    subscription_ids: set[int],
    *,
    code: str,
    actor: Actor,
    now: datetime,
    details: dict[str, Any],
) -> None:
    for subscription in session.scalars(
        select(Subscription).where(Subscription.id.in_(subscription_ids)).with_for_update()
    ):
        if store_rules.SUBSCRIPTION.allows(subscription.state, "cancelled"):
            previous = subscription.state
            subscription.state = "cancelled"
            subscription.updated_at = now
            record(
                session,
                at=now,
                actor=actor,
                subject_type="subscription",
                subject_id=subscription.id,
                customer_id=subscription.customer_id,
                event="subscription.cancelled",
                from_state=previous,
                to_state="cancelled",
                details={**details, "reason": code},
            )


# --- background work --------------------------------------------------------------------------


def capture(
    session: Session, purchase_id: int, *, provider: PaymentProvider, now: datetime
) -> None:
    """`store.capture`: the car runs it, take the money (billing invoices it); the purchase is
    `active` and the customer told. A provider that does not answer is retried."""
    purchase = session.get(Purchase, purchase_id)
    if purchase is None or purchase.state != "delivering":
        return
    if purchase.payment_id is not None:
        kill_point("store.capture", purchase_id)
        payment = billing.capture_payment(
            session,
            session.get_one(Payment, purchase.payment_id),
            provider=provider,
            actor=PLATFORM,
            now=now,
        )
        kill_point("store.captured", purchase_id)
        if payment.state == "authorised":
            raise RetryLater("the provider has not confirmed the capture yet")
        if payment.state != "captured":
            purchase = _lock(session, purchase_id)
            if purchase.state != "delivering":
                return
            vehicle = session.get_one(Vehicle, purchase.vehicle_id)
            _refund(
                session,
                purchase,
                code="capture_failed",
                reason=payment.failure_reason or "the payment could not be taken",
                actor=PLATFORM,
                now=now,
            )
            _reconfigure(session, vehicle, reason="purchase not paid", actor=PLATFORM, now=now)
            return
    purchase = _lock(session, purchase_id)
    if purchase.state != "delivering":
        return
    _move(session, purchase, "active", actor=PLATFORM, now=now)
    _tell(session, purchase, "store.purchase_active", now=now)


def void(session: Session, purchase_id: int, *, provider: PaymentProvider, now: datetime) -> None:
    """`store.void`: release the hold of a refunded purchase; retried while the provider is
    unreachable. Money its capture took while the car's refusal was being recorded (the car
    answered an older version with `rejected` after a newer one was applied, and the two
    jobs crossed) is given back instead: billing issues the credit note."""
    purchase = session.get(Purchase, purchase_id)
    if purchase is None or purchase.payment_id is None:
        return
    try:
        payment = billing.void_payment(
            session,
            session.get_one(Payment, purchase.payment_id),
            provider=provider,
            reason=purchase.failure_code or "refunded",
            actor=PLATFORM,
            now=now,
        )
        if (
            purchase.state == "refunded"
            and payment.state == "captured"
            and payment.refunded_minor < payment.amount_minor
        ):
            billing.refund_payment(
                session, payment, amount_minor=None, provider=provider, actor=PLATFORM, now=now
            )
    except (ProviderError, ProviderTimeout) as error:
        raise RetryLater(f"payment provider: {error.message}") from error


def payment_settled(
    session: Session, purchase_id: int, *, provider: PaymentProvider, now: datetime
) -> None:
    """`store.purchase_payment`: a purchase left `authorising` (the provider answered late, or
    the request died after its commit) goes on without the customer's retry: delivered once
    its payment is authorised (by the provider's event, or this call), failed when refused;
    still unconfirmed, it is looked at again later."""
    purchase = session.get(Purchase, purchase_id)
    if purchase is None or purchase.state != "authorising":
        return
    purchase = drive_purchase(session, purchase, provider=provider, actor=PLATFORM, now=now)
    if purchase.state == "authorising":
        raise RetryLater("the provider has not confirmed the payment yet")


def payment_taken_back(session: Session, payment_id: int, *, reason: str, now: datetime) -> bool:
    """The card's bank took a store payment's money back (a chargeback, told to the customer
    by billing): what it paid for ends, and the car gets a configuration without it. A
    purchase ends as a refunded one does; a subscription's renewed period or an occurrence's
    window is revoked (the subscription stops renewing). False when nothing running was paid
    by this payment."""
    purchase_id = session.scalar(select(Purchase.id).where(Purchase.payment_id == payment_id))
    if purchase_id is not None:
        purchase = _lock(session, purchase_id)
        if purchase.state not in ("delivering", "active"):
            return False
        _refund(
            session,
            purchase,
            code="charged_back",
            reason=reason,
            actor=PLATFORM,
            now=now,
            tell=False,
        )
        vehicle_id = purchase.vehicle_id
    else:
        paid = _rights_paid_by(session, payment_id, lock=False)
        if not paid:
            return False
        lock_vehicle(session, paid[0].vehicle_id)  # the car first, then what it runs
        paid = _rights_paid_by(session, payment_id)
        if not paid:
            return False
        for entitlement in paid:
            entitlements.revoke(
                session, entitlement, reason="charged_back", actor=PLATFORM, now=now
            )
        _stop_subscriptions(
            session,
            {e.subscription_id for e in paid if e.subscription_id is not None},
            code="charged_back",
            actor=PLATFORM,
            now=now,
            details={"payment_id": payment_id},
        )
        vehicle_id = paid[0].vehicle_id
    vehicle = session.get_one(Vehicle, vehicle_id)
    _reconfigure(session, vehicle, reason="payment charged back", actor=PLATFORM, now=now)
    return True


def _rights_paid_by(session: Session, payment_id: int, *, lock: bool = True) -> list[Entitlement]:
    """The counting entitlements a renewal's or an occurrence's payment paid for (a renewed
    period is linked to its payment by the `subscription.renewed` history row only), locked
    unless `lock` is False (to find their car, whose row is locked before them)."""
    occurrences = select(Occurrence.id).where(Occurrence.payment_id == payment_id)
    renewed = select(HistoryEntry.details["entitlement_id"].as_integer()).where(
        HistoryEntry.subject_type == "subscription",
        HistoryEntry.event == "subscription.renewed",
        HistoryEntry.details["payment_id"].as_integer() == payment_id,
    )
    query = (
        select(Entitlement)
        .where(
            or_(Entitlement.occurrence_id.in_(occurrences), Entitlement.id.in_(renewed)),
            Entitlement.state.in_(store_rules.COUNTING_STATES),
        )
        .order_by(Entitlement.id)
    )
    return list(session.scalars(query.with_for_update() if lock else query))


def deadline_passed(session: Session, purchase_id: int, *, now: datetime) -> None:
    """`store.purchase_deadline`: a purchase the car has not applied in time is refunded and
    the car gets a configuration without it. One it applied (awaiting its capture) stays."""
    purchase = _lock(session, purchase_id)
    if purchase.state != "delivering":
        return
    applied = session.scalar(
        select(func.count())
        .select_from(Entitlement)
        .where(Entitlement.purchase_id == purchase.id, Entitlement.state == "active")
    )
    if applied:
        return
    vehicle = session.get_one(Vehicle, purchase.vehicle_id)
    _refund(
        session,
        purchase,
        code="not_applied_in_time",
        reason="the car did not apply it in time",
        actor=PLATFORM,
        now=now,
    )
    _reconfigure(session, vehicle, reason="purchase not applied in time", actor=PLATFORM, now=now)


# --- reading and bookkeeping ------------------------------------------------------------------


def _lines(session: Session, purchase_id: int) -> list[PurchaseLine]:
    return list(
        session.scalars(
            select(PurchaseLine)
            .where(PurchaseLine.purchase_id == purchase_id)
            .order_by(PurchaseLine.id)
        )
    )


def purchase_lines(session: Session, purchase_id: int) -> list[PurchaseLine]:
    """A purchase's lines, in the cart's order."""
    return _lines(session, purchase_id)


def purchases_of_car(session: Session, vehicle_id: int) -> list[Purchase]:
    """The car's purchases, newest first."""
    return list(
        session.scalars(
            select(Purchase)
            .where(Purchase.vehicle_id == vehicle_id)
            .order_by(Purchase.created_at.desc(), Purchase.id.desc())
        )
    )


def purchase_for(session: Session, user: User, purchase_id: int) -> Purchase:
    """The purchase if it is `user`'s; anyone else's is the same 404 as none."""
    customer = sales.customer_of_user(session, user)
    purchase = session.get(Purchase, purchase_id)
    if purchase is None or purchase.customer_id != customer.id:
        raise NotFound("no such purchase", code="purchase.not_found")
    return purchase


def _lock(session: Session, purchase_id: int) -> Purchase:
    """The purchase, locked and read afresh, after its car's row (`lock_vehicle`: the car
    first, then its purchases, then its configuration versions, in every transaction)."""
    vehicle_id = session.scalar(select(Purchase.vehicle_id).where(Purchase.id == purchase_id))
    if vehicle_id is not None:
        lock_vehicle(session, vehicle_id)
    return session.scalars(
        select(Purchase)
        .where(Purchase.id == purchase_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def _record(
    session: Session,
    purchase: Purchase,
    event: str,
    *,
    actor: Actor,
    now: datetime,
    from_state: str | None = None,
    to_state: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=purchase.id,
        customer_id=purchase.customer_id,
        event=event,
        from_state=from_state,
        to_state=to_state,
        details=details,
    )


def _move(
    session: Session,
    purchase: Purchase,
    to_state: str,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    store_rules.PURCHASE.check(purchase.state, to_state)
    from_state = purchase.state
    purchase.state = to_state
    purchase.updated_at = now
    _record(
        session,
        purchase,
        f"purchase.{to_state}",
        actor=actor,
        now=now,
        from_state=from_state,
        to_state=to_state,
        details=details,
    )


def _tell(
    session: Session, purchase: Purchase, kind: str, *, now: datetime, reason: str = ""
) -> None:
    """In-app message and e-mail to the buyer, once per purchase and kind."""
    customer = session.get_one(Customer, purchase.customer_id)
    vin = session.scalar(select(Vehicle.vin).where(Vehicle.id == purchase.vehicle_id))
    invoice_number = None
    if purchase.payment_id is not None and kind == "store.purchase_active":
        from caas.billing.invoices import invoice_of_payment

        invoice = invoice_of_payment(session, purchase.payment_id)
        invoice_number = invoice.number if invoice else None
    names = {
        feature.code: catalog.feature_text(feature, customer.language)[0]
        for feature in session.scalars(
            select(Feature)
            .join(Offer, Offer.feature_id == Feature.id)
            .join(PurchaseLine, PurchaseLine.offer_id == Offer.id)
            .where(PurchaseLine.purchase_id == purchase.id)
        )
    }
    notify_user(
        session,
        user_id=customer.user_id,
        email=customer.email,
        language=customer.language,
        kind=kind,
        context={
            "name": customer.first_name,
            "vin": vin,
            "options": ", ".join(names.values()),
            "amount_minor": purchase.gross_minor,
            "currency": purchase.currency,
            "invoice_number": invoice_number or "",
            "reason": reason,
            "purchase_id": purchase.id,
            "country": customer.country,
        },
        dedupe_key=f"{kind}:{purchase.id}",
        now=now,
    )


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    """The purchase's background topics (registered in `caas.store.jobs`)."""

    def on_capture(session: Session, payload: dict[str, Any]) -> None:
        with SandboxProvider.from_settings(settings) as provider:
            capture(session, int(payload["purchase_id"]), provider=provider, now=clock.now())

    def on_void(session: Session, payload: dict[str, Any]) -> None:
        with SandboxProvider.from_settings(settings) as provider:
            void(session, int(payload["purchase_id"]), provider=provider, now=clock.now())

    def on_deadline(session: Session, payload: dict[str, Any]) -> None:
        deadline_passed(session, int(payload["purchase_id"]), now=clock.now())

    def on_payment(session: Session, payload: dict[str, Any]) -> None:
        with SandboxProvider.from_settings(settings) as provider:
            payment_settled(
                session, int(payload["purchase_id"]), provider=provider, now=clock.now()
            )

    return {
        CAPTURE_TOPIC: on_capture,
        VOID_TOPIC: on_void,
        DEADLINE_TOPIC: on_deadline,
        PAYMENT_TOPIC: on_payment,
    }
