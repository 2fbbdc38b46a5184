"""Tailored offers: from last month's metered use, rated by the store, a cheaper offer with the
reason and the saving; never read or shown without the customer's tailored_offers consent."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.billing.vat import rate_at
from caas.catalog.models import Feature
from caas.core.clock import FixedClock
from caas.core.money import Money
from caas.core.settings import Settings
from caas.protocol.mqtt import UsageEvent
from caas.store import entitlements, metering
from caas.store.models import Offer
from caas.store.rules import price_line
from caas.vehicles.ingest import store_usage_events
from tests.registration.support import login
from tests.store.conftest import Owner, delivered_owner, offer
from tests.store.engine import engine_keys, signing
from tests.vehicles.cars import consent
from tests.web.support import log_in, text_of

__all__ = ["engine_keys", "signing"]

HOURLY_MINOR = 150  # net per hour of power boost
HOURS = 40  # 40 h x 1.50 = 60.00 net, 72.60 with Spanish VAT


@pytest.fixture
def owner(db: Session, settings: Settings, clock: FixedClock, signing: object) -> Owner:
    return delivered_owner(db, settings, clock)


@pytest.fixture
def used_last_month(db: Session, owner: Owner, clock: FixedClock) -> Offer:
    """The owner's car has power boost by the hour and used it for 40 hours in January (the
    test clock's month); the clock is then moved to 10 February."""
    hourly = offer(db, owner.vehicle, "power_boost", "metered", net_minor=HOURLY_MINOR, unit="hour")
    entitlements.grant(
        db,
        vehicle=owner.vehicle,
        feature=db.get_one(Feature, hourly.feature_id),
        source="metered",
        valid_from=clock.now(),
        valid_until=None,
        customer_id=owner.customer.id,
        offer_id=hourly.id,
        actor=owner.actor(),
        now=clock.now(),
    )
    events = [
        UsageEvent(
            vin=owner.vehicle.vin,
            seq=seq,
            at=clock.now() + timedelta(days=seq),
            feature="power_boost",
            unit="hour",
            quantity=hours,
        )
        for seq, hours in ((1, 15.0), (2, 25.0))
    ]
    store_usage_events(db, events, now=clock.now())
    db.commit()
    clock.advance(timedelta(days=26))  # 10 February 2026
    return hourly


def _suggestions(client: TestClient, owner: Owner):  # type: ignore[no-untyped-def]
    return client.get(f"/api/v1/me/vehicles/{owner.vehicle.vin}/suggestions")


def test_without_consent_nothing_is_suggested_nor_shown(
    app_client: TestClient, db: Session, owner: Owner, used_last_month: Offer, clock: FixedClock
) -> None:
    login(app_client, owner.user.email)
    refused = _suggestions(app_client, owner)
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "privacy.consent_required"

    log_in(app_client, owner.user.email)
    page = app_client.get(f"/portal/cars/{owner.vehicle.vin}/store")
    assert page.status_code == 200, page.text
    assert "data-suggestion=" not in page.text
    assert "data-suggestions-consent" in page.text

    # Given, then withdrawn: refused again from then on.
    consent(db, owner.customer.id, clock.now(), tailored_offers=True)
    db.commit()
    assert _suggestions(app_client, owner).status_code == 200
    consent(db, owner.customer.id, clock.now(), tailored_offers=False)
    db.commit()
    assert _suggestions(app_client, owner).status_code == 403


def test_with_consent_the_saving_is_computed_from_the_rated_usage(
    app_client: TestClient, db: Session, owner: Owner, used_last_month: Offer, clock: FixedClock
) -> None:
    consent(db, owner.customer.id, clock.now(), tailored_offers=True)
    db.commit()
    login(app_client, owner.user.email)
    response = _suggestions(app_client, owner)
    assert response.status_code == 200, response.text
    found = response.json()

    # What the store rated for January is what the customer paid.
    start, end = metering.month_of(clock.now() - timedelta(days=15), "ES")
    (line,) = metering.rated_usage(db, [owner.vehicle.id], start=start, end=end)
    assert (line.quantity, line.priced.gross_minor) == (HOURS, 7_260)
    vat = rate_at(db, "ES", clock.now())

    assert [(s["kind"], s["duration"]) for s in found] == [
        ("subscription", "1Y"),  # 12 x 72.60 = 871.20 against 592.90 a year
        ("subscription", "1M"),  # 72.60 against 59.29 a month
        ("window", "1M"),  # 72.60 against 71.39
    ]
    for suggestion in found:
        seeded = db.get_one(Offer, suggestion["offer_id"])
        price = price_line(seeded.net_minor, vat).gross_minor
        assert suggestion["price"]["amount_minor"] == price
        expected = 7_260 * suggestion["months"] - price
        assert suggestion["saving"]["amount_minor"] == expected
        assert suggestion["paid"]["amount_minor"] == 7_260
        assert (suggestion["month"], suggestion["quantity"], suggestion["unit"]) == (
            "2026-01",
            "40",
            "hour",
        )
    monthly = found[1]
    assert monthly["saving"]["amount_minor"] == 7_260 - 5_929
    # The customer reads it in Spanish, with money formatted for Spain.
    assert Money(7_260, "EUR").format("es") in monthly["reason"]
    assert Money(5_929, "EUR").format("es") in monthly["reason"]
    assert "enero de 2026" in monthly["reason"]
    assert "suscripción mensual" in monthly["reason"]
    assert Money(1_331, "EUR").format("es") in monthly["saving_text"]

    log_in(app_client, owner.user.email)
    page = app_client.get(f"/portal/cars/{owner.vehicle.vin}/store").text
    assert 'data-suggestion="power_boost:subscription:1M"' in page
    assert "Ahorrarías 13,31" in text_of(page)


def test_nothing_is_suggested_when_the_use_was_cheaper(
    app_client: TestClient, db: Session, owner: Owner, clock: FixedClock
) -> None:
    consent(db, owner.customer.id, clock.now(), tailored_offers=True)
    db.commit()
    login(app_client, owner.user.email)
    response = _suggestions(app_client, owner)
    assert (response.status_code, response.json()) == (200, [])


def test_another_customers_car_is_not_found(
    app_client: TestClient, db: Session, settings: Settings, owner: Owner, clock: FixedClock
) -> None:
    stranger = delivered_owner(db, settings, clock)
    consent(db, stranger.customer.id, clock.now(), tailored_offers=True)
    db.commit()
    login(app_client, stranger.user.email)
    assert _suggestions(app_client, owner).status_code == 404
