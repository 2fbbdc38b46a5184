"""Product improvement reads the fleet's use only from cars whose owners consent to it, and
names no one; withdrawing counts from the next read."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.protocol.mqtt import UsageEvent
from caas.vehicles.ingest import store_usage_events
from tests.registration.support import login
from tests.vehicles.cars import Fleet, consent

OPERATOR = "operator@caas.example"


def _use(db: Session, fleet: Fleet, seq: int, hours: float, clock: FixedClock) -> None:
    event = UsageEvent(
        vin=fleet.order.vin,
        seq=seq,
        at=clock.now() + timedelta(hours=seq),
        feature="power_boost",
        unit="hour",
        quantity=hours,
    )
    store_usage_events(db, [event], now=clock.now())


def test_only_consenting_owners_cars_are_counted(
    app_client: TestClient, db: Session, owner: Fleet, other: Fleet, clock: FixedClock
) -> None:
    _use(db, owner, 1, 2.5, clock)
    _use(db, other, 2, 7.0, clock)
    consent(db, owner.customer_id, clock.now(), product_improvement=True)
    consent(db, other.customer_id, clock.now(), driving_style=True)
    db.commit()

    login(app_client, OPERATOR)
    response = app_client.get("/api/v1/product-improvement/usage", params={"month": "2026-01"})
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"feature": "power_boost", "unit": "hour", "cars": 1, "quantity": "2.5"}
    ]
    assert owner.order.vin not in response.text

    consent(db, owner.customer_id, clock.now(), product_improvement=False)
    db.commit()
    emptied = app_client.get("/api/v1/product-improvement/usage", params={"month": "2026-01"})
    assert emptied.json() == []
    bad = app_client.get("/api/v1/product-improvement/usage", params={"month": "2026-13"})
    assert bad.status_code == 422
    for month in ("0000-01", "9999-12"):  # no calendar month to count: refused, not a 500
        answer = app_client.get("/api/v1/product-improvement/usage", params={"month": month})
        assert answer.status_code == 422, answer.text


def test_customers_cannot_read_the_fleet(app_client: TestClient, owner: Fleet) -> None:
    login(app_client, owner.order.customer_email)
    response = app_client.get("/api/v1/product-improvement/usage", params={"month": "2026-01"})
    assert response.status_code == 403
