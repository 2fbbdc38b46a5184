"""Shared by the store's tests: the payment sandbox on a real port (and settings that reach it),
and builders for the purchase's tests: a delivered car whose owner can log in, offers, buying,
the car's answer, the relay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.billing.provider import SandboxProvider
from caas.catalog.models import Feature
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.ota import service as ota
from caas.ota.models import ConfigurationVersion
from caas.protocol.mqtt import Reported
from caas.sales.models import Customer
from caas.seed import DEMO_PASSWORD
from caas.store import purchases
from caas.store.models import Offer, Purchase, Subscription
from caas.store.schemas import PurchaseItem
from caas.vehicles.models import Vehicle
from caas.worker import build_relay
from tests.billing.conftest import payment_sandbox, settings
from tests.vehicles.support import Car

__all__ = ["payment_sandbox", "settings"]


@dataclass(frozen=True)
class Owner:
    """A delivered car's owner, able to log in with the demo password."""

    car: Car
    vehicle: Vehicle
    customer: Customer
    user: User

    def actor(self) -> Actor:
        return Actor(kind="customer", label=self.user.email, user_id=self.user.id)


def owner_of(db: Session, car: Car, now: datetime) -> Owner:
    user = db.get_one(User, car.customer_user_id)
    user.password_hash = hash_password(DEMO_PASSWORD)
    user.activated_at = now
    db.commit()
    return Owner(
        car=car,
        vehicle=db.get_one(Vehicle, car.vehicle_id),
        customer=db.get_one(Customer, car.customer_id),
        user=user,
    )


def feature_of(db: Session, vehicle: Vehicle, code: str) -> Feature:
    return db.scalars(
        select(Feature).where(Feature.platform_id == vehicle.platform_id, Feature.code == code)
    ).one()


def offer(
    db: Session,
    vehicle: Vehicle,
    code: str,
    kind: str,
    duration: str = "",
    *,
    net_minor: int = 1_000,
    country: str = "ES",
    deadline_seconds: int = 600,
    unit: str | None = None,
) -> Offer:
    """The offer of `code` of this kind and duration in `country`, on sale at this price
    (the seed's when it has one, else a new one)."""
    feature = feature_of(db, vehicle, code)
    found = db.scalars(
        select(Offer).where(
            Offer.feature_id == feature.id,
            Offer.country == country,
            Offer.kind == kind,
            Offer.duration == duration,
        )
    ).first()
    if found is None:
        found = Offer(
            feature_id=feature.id,
            country=country,
            kind=kind,
            duration=duration,
            currency="EUR",
            refund_policy="none",
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            updated_at=datetime(2026, 1, 1, tzinfo=UTC),
            net_minor=0,
        )
        db.add(found)
    found.net_minor = 0 if kind in ("trial",) else net_minor
    found.unit = unit if kind == "metered" else None
    found.apply_deadline_seconds = deadline_seconds
    found.active = True
    db.commit()
    return found


def item(offer: Offer, **fields: Any) -> PurchaseItem:
    return PurchaseItem(offer_id=offer.id, **fields)


def buy(
    db: Session,
    owner: Owner,
    items: Sequence[PurchaseItem],
    *,
    token: str,
    key: str,
    settings: Settings,
    clock: FixedClock,
) -> Purchase:
    """What the purchase route does: begin, commit, authorise and deliver."""
    purchase = purchases.begin_purchase(
        db,
        user=owner.user,
        vin=owner.vehicle.vin,
        items=items,
        payment_method=token,
        idempotency_key=key,
        now=clock.now(),
    )
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        purchase = purchases.drive_purchase(
            db,
            purchase,
            provider=provider,
            actor=owner.actor(),
            now=clock.now(),
        )
    db.commit()
    return purchase


def answer(
    db: Session,
    owner: Owner,
    version: int,
    status: str,
    clock: FixedClock,
    reason: str | None = None,
) -> ConfigurationVersion | None:
    """The car's answer to `version`, as the MQTT bridge hands it to the platform."""
    found = ota.record_report(
        db,
        Reported.model_validate(
            {
                "vin": owner.vehicle.vin,
                "version": version,
                "status": status,
                "reason": reason,
                "at": clock.now(),
                "active_features": [],
            }
        ),
        now=clock.now(),
    )
    db.commit()
    return found


def run_relay(
    settings: Settings, sessions: sessionmaker[Session], clock: FixedClock, db: Session
) -> int:
    """Deliver every due outbox message once (what the worker does), then read afresh."""
    handled = build_relay(settings, sessions, clock).run_once(limit=200)
    db.expire_all()
    return handled


# --- time: subscriptions, schedules, reminders (helper "time") -------------------------------


def delivered_owner(db: Session, settings: Settings, clock: FixedClock) -> Owner:
    """A car born and delivered now (the plan's options on), its owner able to log in;
    committed. Needs the `signing` fixture."""
    from tests.vehicles.support import born_car, deliver

    car = born_car(db, settings=settings, now=clock.now())
    deliver(db, car, now=clock.now())
    found = owner_of(db, car, clock.now())
    db.commit()
    return found


def subscribed(
    db: Session, owner: Owner, subscription_offer: Offer, *, token: str, clock: FixedClock
) -> Subscription:
    """A subscription as a purchase leaves it once the car applied it: its first period an
    active entitlement from now, and its renewal queued; committed."""
    from caas.store import entitlements, subscriptions
    from caas.store.rules import add_duration

    now = clock.now()
    end = add_duration(now, subscription_offer.duration)
    feature = db.get_one(Feature, subscription_offer.feature_id)
    subscription = Subscription(
        vehicle_id=owner.vehicle.id,
        customer_id=owner.customer.id,
        offer_id=subscription_offer.id,
        code=feature.code,
        state="active",
        payment_method=token,
        current_period_start=now,
        current_period_end=end,
        cancel_at_period_end=False,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    db.add(subscription)
    db.flush()
    entitlements.grant(
        db,
        vehicle=owner.vehicle,
        feature=feature,
        source="subscription",
        valid_from=now,
        valid_until=end,
        customer_id=owner.customer.id,
        offer_id=subscription_offer.id,
        subscription_id=subscription.id,
        actor=owner.actor(),
        now=now,
    )
    subscriptions.schedule_renewal(db, subscription, now=now)
    db.commit()
    return subscription


def run_all_due(
    settings: Settings, sessions: sessionmaker[Session], clock: FixedClock, db: Session
) -> int:
    """Run the relay until nothing due is left at the clock's time (a job may queue another
    that is due at once), then read afresh."""
    relay = build_relay(settings, sessions, clock)
    handled = 0
    while count := relay.run_once(limit=200):
        handled += count
    db.expire_all()
    return handled
