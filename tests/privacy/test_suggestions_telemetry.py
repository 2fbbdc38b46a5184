"""Tailored offers from the consented telemetry of the last 30 days: the season (days driven in
winter, or in the cold read under driving_style), the distance (km on the odometer) and trips on
motorways (speed, only under driving_style); each with its reason and saving, never without
the consents it needs."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing.vat import rate_at
from caas.catalog.models import Feature
from caas.core.clock import FixedClock
from caas.core.money import Money
from caas.core.settings import Settings
from caas.store import metering
from caas.store.models import Offer
from caas.store.rules import price_line
from caas.vehicles.ingest import store_telemetry
from tests.registration.support import login
from tests.store.conftest import Owner, delivered_owner, owner_of, subscribed
from tests.store.engine import engine_keys, signing
from tests.vehicles.cars import consent, telemetry
from tests.vehicles.support import born_car, deliver
from tests.web.support import log_in, text_of

__all__ = ["engine_keys", "signing"]


def _gross(db: Session, net_minor: int, now: datetime) -> int:
    return price_line(net_minor, rate_at(db, "ES", now)).gross_minor


def _seeded(db: Session, owner: Owner, code: str, kind: str, duration: str = "") -> Offer:
    return db.scalars(
        select(Offer)
        .join(Feature, Feature.id == Offer.feature_id)
        .where(
            Feature.platform_id == owner.vehicle.platform_id,
            Feature.code == code,
            Offer.country == "ES",
            Offer.kind == kind,
            Offer.duration == duration,
        )
    ).one()


def _drive(db: Session, owner: Owner, start: datetime, days: int, **fields: Any) -> None:
    """One sample a day, driving, from `start`; stored as the ingest stores it."""
    samples = [
        telemetry(owner.vehicle.vin, day + 1, start + timedelta(days=day), **fields)
        for day in range(days)
    ]
    store_telemetry(db, samples, now=start + timedelta(days=days))
    db.commit()


def _suggested(client: TestClient, owner: Owner, basis: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/me/vehicles/{owner.vehicle.vin}/suggestions")
    assert response.status_code == 200, response.text
    return [s for s in response.json() if s["basis"] == basis]


@pytest.fixture
def owner(db: Session, settings: Settings, clock: FixedClock, signing: object) -> Owner:
    return delivered_owner(db, settings, clock)  # an AURA (winter traction) in Spain


def test_winter_days_suggest_a_months_pass_of_winter_traction_only_with_consent(
    app_client: TestClient, db: Session, owner: Owner, clock: FixedClock
) -> None:
    _drive(db, owner, clock.now() + timedelta(hours=1), 10)  # 10 January days, not cold
    clock.advance(timedelta(days=15))
    login(app_client, owner.user.email)
    path = f"/api/v1/me/vehicles/{owner.vehicle.vin}/suggestions"
    assert app_client.get(path).status_code == 403  # no tailored_offers: nothing read

    consent(db, owner.customer.id, clock.now(), tailored_offers=True)
    db.commit()
    (season,) = _suggested(app_client, owner, "season")
    daily = _seeded(db, owner, "winter_traction", "window", "1D")
    monthly = _seeded(db, owner, "winter_traction", "window", "1M")
    paid = 10 * _gross(db, daily.net_minor, clock.now())
    price = _gross(db, monthly.net_minor, clock.now())
    assert (season["code"], season["offer_id"], season["quantity"], season["unit"]) == (
        "winter_traction",
        monthly.id,
        "10",
        "day",
    )
    assert (season["paid"]["amount_minor"], season["price"]["amount_minor"]) == (paid, price)
    assert season["saving"]["amount_minor"] == paid - price > 0
    assert season["month"] == "2026-01-15/2026-01-30"
    assert "10 días de invierno" in season["reason"]
    assert Money(paid - price, "EUR").format("es") in season["saving_text"]

    log_in(app_client, owner.user.email)
    page = app_client.get(f"/portal/cars/{owner.vehicle.vin}/store").text
    assert 'data-suggestion="winter_traction:window:1M"' in page
    assert "Modos de tracción de invierno" in text_of(page)

    consent(db, owner.customer.id, clock.now(), tailored_offers=False)
    db.commit()
    page = app_client.get(f"/portal/cars/{owner.vehicle.vin}/store").text
    assert "data-suggestion=" not in page


def test_cold_days_in_summer_count_only_under_driving_style(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock, signing: object
) -> None:
    clock.advance(timedelta(days=180))  # 14 July 2026
    owner = delivered_owner(db, settings, clock)
    consent(db, owner.customer.id, clock.now(), tailored_offers=True, driving_style=True)
    db.commit()
    _drive(db, owner, clock.now() + timedelta(hours=1), 8, extra={"outside_temperature_c": -2.0})
    clock.advance(timedelta(days=10))
    login(app_client, owner.user.email)
    (season,) = _suggested(app_client, owner, "season")
    assert (season["code"], season["quantity"]) == ("winter_traction", "8")

    # Withdrawn: the readings stored are not read any more, and July is no winter.
    consent(db, owner.customer.id, clock.now(), driving_style=False)
    db.commit()
    assert _suggested(app_client, owner, "season") == []


def test_many_km_suggest_the_yearly_subscription_of_a_feature_paid_monthly(
    app_client: TestClient, db: Session, owner: Owner, clock: FixedClock
) -> None:
    monthly = _seeded(db, owner, "power_boost", "subscription", "1M")
    yearly = _seeded(db, owner, "power_boost", "subscription", "1Y")
    subscribed(db, owner, monthly, token="tok_visa", clock=clock)
    consent(db, owner.customer.id, clock.now(), tailored_offers=True)
    db.commit()
    start = clock.now() + timedelta(hours=1)
    samples = [
        telemetry(owner.vehicle.vin, day + 1, start + timedelta(days=day), odometer_km=km)
        for day, km in enumerate((1_000.0, 1_900.0, 2_300.0, 2_000.0))
    ]
    store_telemetry(db, samples, now=start)
    db.commit()
    clock.advance(timedelta(days=5))
    login(app_client, owner.user.email)
    assert _suggested(app_client, owner, "distance") == []  # 1,300 km: not a lot

    store_telemetry(
        db, [telemetry(owner.vehicle.vin, 10, clock.now(), odometer_km=2_620.0)], now=clock.now()
    )
    db.commit()
    clock.advance(timedelta(minutes=1))
    (distance,) = _suggested(app_client, owner, "distance")
    paid = 12 * _gross(db, monthly.net_minor, clock.now())
    price = _gross(db, yearly.net_minor, clock.now())
    assert (distance["code"], distance["offer_id"], distance["months"]) == (
        "power_boost",
        yearly.id,
        12,
    )
    assert (distance["quantity"], distance["unit"]) == ("1620", "km")
    assert (distance["paid"]["amount_minor"], distance["saving"]["amount_minor"]) == (
        paid,
        paid - price,
    )
    assert "1620 km" in distance["reason"].replace("\xa0", "").replace(".", "")
    assert "mes a mes" in distance["reason"]


@pytest.fixture
def cirrus(db: Session, settings: Settings, clock: FixedClock, signing: object) -> Owner:
    """A Cirrus (motorway autopilot, not held) delivered in Spain."""
    car = born_car(db, settings=settings, now=clock.now(), platform="CIRRUS")
    deliver(db, car, now=clock.now())
    found = owner_of(db, car, clock.now())
    db.commit()
    return found


def _motorway_days(db: Session, owner: Owner, start: datetime) -> None:
    """20 days with an hour at 130 km/h, a sample a minute (59 minutes counted a day)."""
    samples = [
        telemetry(
            owner.vehicle.vin,
            day * 100 + minute + 1,
            start + timedelta(days=day, minutes=minute),
            speed_kmh=130.0,
        )
        for day in range(20)
        for minute in range(60)
    ]
    store_telemetry(db, samples, now=start)
    db.commit()


def test_motorway_trips_suggest_the_monthly_autopilot_only_under_driving_style(
    app_client: TestClient, db: Session, cirrus: Owner, clock: FixedClock
) -> None:
    consent(db, cirrus.customer.id, clock.now(), tailored_offers=True, driving_style=True)
    db.commit()
    _motorway_days(db, cirrus, clock.now() + timedelta(hours=1))
    clock.advance(timedelta(days=25))
    login(app_client, cirrus.user.email)
    (motorway,) = _suggested(app_client, cirrus, "motorway")
    per_km = _seeded(db, cirrus, "motorway_autopilot", "metered")
    monthly = _seeded(db, cirrus, "motorway_autopilot", "subscription", "1M")
    km = 20 * 59 * 130 // 60 + 1  # 2,556.67 km, rounded half up
    paid = _gross(db, metering.rate(Decimal(km), per_km.net_minor), clock.now())
    price = _gross(db, monthly.net_minor, clock.now())
    assert (motorway["code"], motorway["offer_id"], motorway["quantity"]) == (
        "motorway_autopilot",
        monthly.id,
        str(km),
    )
    assert (motorway["paid"]["amount_minor"], motorway["saving"]["amount_minor"]) == (
        paid,
        paid - price,
    )
    assert "19,7 h por autopista" in motorway["reason"]

    # driving_style withdrawn: the speeds stored are not read for offers any more.
    consent(db, cirrus.customer.id, clock.now(), driving_style=False)
    db.commit()
    assert _suggested(app_client, cirrus, "motorway") == []


def test_motorway_trips_are_not_kept_without_driving_style(
    app_client: TestClient, db: Session, cirrus: Owner, clock: FixedClock
) -> None:
    consent(db, cirrus.customer.id, clock.now(), tailored_offers=True)
    db.commit()
    _motorway_days(db, cirrus, clock.now() + timedelta(hours=1))  # speed not stored
    clock.advance(timedelta(days=25))
    consent(db, cirrus.customer.id, clock.now(), driving_style=True)  # too late for those
    db.commit()
    login(app_client, cirrus.user.email)
    assert _suggested(app_client, cirrus, "motorway") == []
