"""The customer's consent to keeping location history and driving style: off until given,
changed only by the customer, every change kept in their file, and withdrawing stops the
storing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import HistoryEntry
from caas.core.settings import Settings
from caas.vehicles import ingest
from caas.vehicles.models import TelemetrySample
from tests.registration.support import DEALERS, let_customer_log_in, login
from tests.vehicles.cars import Fleet, owned_fleet, telemetry


@pytest.fixture
def fleet(db: Session, settings: Settings, clock: FixedClock) -> Fleet:
    fleet = owned_fleet(db, settings=settings, now=clock.now())
    let_customer_log_in(db, fleet.order, clock.now())
    return fleet


@pytest.fixture
def customer(app_client: TestClient, fleet: Fleet) -> TestClient:
    login(app_client, fleet.order.customer_email)
    return app_client


def answers(response: object) -> dict[str, bool]:
    body = response.json()  # type: ignore[attr-defined]
    return {item["purpose"]: item["granted"] for item in body}


def consent_history(db: Session, fleet: Fleet) -> list[tuple[str, str | None, str | None, str]]:
    query = (
        select(HistoryEntry)
        .where(HistoryEntry.customer_id == fleet.customer_id, HistoryEntry.event.like("consent.%"))
        .order_by(HistoryEntry.id)
    )
    return [
        (entry.event, entry.from_state, entry.to_state, entry.details["purpose"])
        for entry in db.scalars(query)
    ]


def test_every_consent_is_off_until_the_customer_gives_it_but_the_service_one(
    customer: TestClient,
) -> None:
    response = customer.get("/api/v1/me/consents")
    assert response.status_code == 200, response.text
    assert [
        (item["purpose"], item["granted"], item["required"], item["changed_at"])
        for item in response.json()
    ] == [
        ("service", True, True, None),
        ("location_history", False, False, None),
        ("driving_style", False, False, None),
        ("product_improvement", False, False, None),
        ("tailored_offers", False, False, None),
    ]
    assert all(item["description"] for item in response.json())


def test_each_change_is_kept_in_the_customers_file(
    customer: TestClient, db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    granted = customer.put("/api/v1/me/consents", json={"location_history": True})
    assert granted.status_code == 200, granted.text
    assert answers(granted) == {
        "service": True,
        "location_history": True,
        "driving_style": False,
        "product_improvement": False,
        "tailored_offers": False,
    }
    assert granted.json()[1]["changed_at"] == clock.now().isoformat().replace("+00:00", "Z")

    clock.advance(timedelta(days=2))
    both = {"location_history": False, "driving_style": True}
    expected = {**answers(granted), **both}
    assert answers(customer.put("/api/v1/me/consents", json=both)) == expected
    # The same answers again change nothing and add nothing to the file.
    assert answers(customer.put("/api/v1/me/consents", json=both)) == expected
    assert answers(customer.get("/api/v1/me/consents")) == expected

    assert consent_history(db, fleet) == [
        ("consent.granted", None, "granted", "location_history"),
        ("consent.withdrawn", "granted", "withdrawn", "location_history"),
        ("consent.granted", None, "granted", "driving_style"),
    ]
    timeline = customer.get("/api/v1/me/file").json()["timeline"]
    assert [entry["event"] for entry in timeline if entry["event"].startswith("consent.")] == [
        "consent.granted",
        "consent.withdrawn",
        "consent.granted",
    ]


def test_withdrawing_through_the_api_stops_the_storing(
    customer: TestClient, db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    vin = fleet.order.vin
    customer.put("/api/v1/me/consents", json={"location_history": True})
    ingest.store_telemetry(db, [telemetry(vin, 1, clock.now())], now=clock.now())
    db.commit()
    clock.advance(timedelta(minutes=1))
    customer.put("/api/v1/me/consents", json={"location_history": False})
    ingest.store_telemetry(db, [telemetry(vin, 2, clock.now())], now=clock.now())
    positions = db.execute(
        select(TelemetrySample.seq, TelemetrySample.latitude)
        .where(TelemetrySample.vin == vin)
        .order_by(TelemetrySample.seq)
    ).all()
    assert [tuple(row) for row in positions] == [(1, 40.4168), (2, None)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"location_history": "maybe"}, "location_history"),
        ({"location_history": True, "marketing": True}, "marketing"),
        ({"service": False}, "service"),
    ],
)
def test_a_malformed_answer_is_refused_naming_the_field(
    customer: TestClient, db: Session, fleet: Fleet, body: dict[str, object], field: str
) -> None:
    response = customer.put("/api/v1/me/consents", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert consent_history(db, fleet) == []


def test_only_customers_have_consents(app_client: TestClient) -> None:
    assert app_client.get("/api/v1/me/consents").status_code == 401
    login(app_client, DEALERS["ES"])
    assert app_client.get("/api/v1/me/consents").status_code == 403
    assert app_client.put("/api/v1/me/consents", json={"driving_style": True}).status_code == 403


def test_the_history_of_consents_is_listed_oldest_first_and_shown_on_the_privacy_page(
    customer: TestClient, clock: FixedClock
) -> None:
    customer.put("/api/v1/me/consents", json={"tailored_offers": True})
    clock.advance(timedelta(days=1))
    customer.put("/api/v1/me/consents", json={"tailored_offers": False, "driving_style": True})
    response = customer.get("/api/v1/me/consents/history")
    assert response.status_code == 200, response.text
    assert [(c["purpose"], c["from_state"], c["to_state"]) for c in response.json()] == [
        ("tailored_offers", None, "granted"),
        ("driving_style", None, "granted"),
        ("tailored_offers", "granted", "withdrawn"),
    ]
    assert all(c["actor"].startswith("customer:") for c in response.json())
    page = customer.get("/portal/privacy")
    assert page.status_code == 200, page.text
    assert 'data-consent-change="tailored_offers:withdrawn"' in page.text
    assert 'data-consent-change="driving_style:granted"' in page.text
