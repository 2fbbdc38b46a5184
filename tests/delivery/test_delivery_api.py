"""Delivering the registered car: scheduling, dispatch and hand-over by the dealer, each step
notified to the customer and kept on the order's timeline."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.sales.models import Customer
from caas.worker import build_relay
from tests.conftest import SmtpInbox
from tests.registration.support import (
    DEALERS,
    Order,
    let_customer_log_in,
    login,
    notified_kinds,
    order_in_state,
    sale_of,
    vehicle_of,
)


def post(client: TestClient, order: Order, step: str, key: str, json: Any = None) -> Any:
    path = f"/api/v1/sales/{order.sale_id}/delivery" + (f"/{step}" if step else "")
    return client.post(path, json=json, headers={"Idempotency-Key": key})


def schedule(client: TestClient, order: Order, when: date, key: str = "schedule-0001") -> Any:
    return post(client, order, "", key, {"scheduled_for": when.isoformat(), "carrier": "TransIb"})


@pytest.fixture
def registered(db: Session, settings: Settings, clock: FixedClock) -> Order:
    return order_in_state(db, settings=settings, now=clock.now(), state="registered")


def test_full_delivery_notifies_each_step_and_ends_waiting_for_pairing(
    app_client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    smtp: SmtpInbox,
    registered: Order,
) -> None:
    login(app_client, DEALERS["ES"])
    day = clock.now().date() + timedelta(days=3)
    scheduled = schedule(app_client, registered, day)
    assert scheduled.status_code == 201, scheduled.text
    body = scheduled.json()
    assert body["state"] == "scheduled"
    assert body["scheduled_for"] == day.isoformat()
    assert body["address"] == {
        "recipient": body["address"]["recipient"],
        "street": "Calle Mayor 1",
        "postal_code": "28013",
        "city": "Madrid",
        "country": "ES",
    }

    clock.advance(timedelta(days=3))
    dispatched = post(
        app_client, registered, "dispatch", "dispatch-0001", {"tracking_number": "TI-778"}
    )
    assert dispatched.status_code == 200, dispatched.text
    assert dispatched.json()["state"] == "in_transit"
    assert dispatched.json()["tracking_number"] == "TI-778"

    clock.advance(timedelta(hours=4))
    completed = post(app_client, registered, "complete", "complete-0001")
    assert completed.status_code == 200, completed.text
    assert completed.json()["state"] == "delivered"
    assert completed.json()["order_state_label"] == "Delivered: waiting for the phone to be paired"
    assert vehicle_of(db, registered).delivered_at == clock.now()

    order = app_client.get(f"/api/v1/sales/{registered.sale_id}").json()
    assert order["state_label"] == "Delivered: waiting for the phone to be paired"
    timeline = app_client.get(f"/api/v1/sales/{registered.sale_id}/history").json()
    steps = {entry["to_state"]: entry for entry in timeline[-3:]}
    assert list(steps) == ["delivery_scheduled", "in_transit", "delivered"]
    assert steps["delivery_scheduled"]["details"] == {
        "scheduled_for": day.isoformat(),
        "carrier": "TransIb",
        "address": "Calle Mayor 1, 28013 Madrid",
    }
    assert steps["in_transit"]["details"]["tracking_number"] == "TI-778"
    assert steps["delivered"]["actor"] == f"dealer: {DEALERS['ES']}"

    assert notified_kinds(db, registered)[-3:] == [
        "order.delivery_scheduled",
        "order.in_transit",
        "order.delivered",
    ]
    build_relay(settings, sessions, clock).run_once()
    assert len(smtp.to(registered.customer_email)) == 4  # activation and the three steps


def test_the_address_is_the_customers_when_scheduled(
    app_client: TestClient, db: Session, clock: FixedClock, registered: Order
) -> None:
    login(app_client, DEALERS["ES"])
    schedule(app_client, registered, clock.now().date())
    customer = db.get_one(Customer, registered.customer_id)
    customer.street = "Calle Nueva 9"
    db.commit()
    shown = app_client.get(f"/api/v1/sales/{registered.sale_id}/delivery").json()
    assert shown["address"]["street"] == "Calle Mayor 1"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scheduled_for": "2026-01-14", "carrier": "TransIb"}, "scheduled_for"),
        ({"scheduled_for": "2027-01-15", "carrier": "TransIb"}, "scheduled_for"),
        ({"scheduled_for": "15/01/2026", "carrier": "TransIb"}, "scheduled_for"),
        ({"carrier": "TransIb"}, "scheduled_for"),
        ({"scheduled_for": "2026-01-20", "carrier": " "}, "carrier"),
        ({"scheduled_for": "2026-01-20"}, "carrier"),
    ],
)
def test_a_bad_schedule_is_422_naming_the_field(
    app_client: TestClient, db: Session, registered: Order, body: dict[str, Any], field: str
) -> None:
    login(app_client, DEALERS["ES"])
    response = post(app_client, registered, "", "schedule-bad-01", body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert sale_of(db, registered).state == "registered"


def test_today_is_a_valid_delivery_date(
    app_client: TestClient, clock: FixedClock, registered: Order
) -> None:
    login(app_client, DEALERS["ES"])
    assert schedule(app_client, registered, clock.now().date()).status_code == 201


def test_a_bad_tracking_number_is_422(
    app_client: TestClient, clock: FixedClock, registered: Order
) -> None:
    login(app_client, DEALERS["ES"])
    schedule(app_client, registered, clock.now().date())
    response = post(app_client, registered, "dispatch", "dispatch-bad-1", {"tracking_number": "#!"})
    assert response.status_code == 422
    assert response.json()["field"] == "tracking_number"


def test_steps_out_of_order_are_409(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock, registered: Order
) -> None:
    login(app_client, DEALERS["ES"])
    assert post(app_client, registered, "dispatch", "early-dispatch").status_code == 409
    assert post(app_client, registered, "complete", "early-complete").status_code == 409
    schedule(app_client, registered, clock.now().date())
    response = post(app_client, registered, "complete", "early-complete-2")
    assert response.status_code == 409
    assert response.json()["code"] == "order.invalid_transition"
    assert (
        schedule(app_client, registered, clock.now().date(), key="schedule-again").status_code
        == 409
    )

    unregistered = order_in_state(db, settings=settings, now=clock.now(), state="registering",
                                  national_id="87654321X")  # fmt: skip
    assert schedule(app_client, unregistered, clock.now().date()).status_code == 409


def test_a_retried_step_with_the_same_key_acts_once(
    app_client: TestClient, clock: FixedClock, registered: Order
) -> None:
    login(app_client, DEALERS["ES"])
    first = schedule(app_client, registered, clock.now().date(), key="same-schedule")
    second = schedule(app_client, registered, clock.now().date(), key="same-schedule")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    timeline = app_client.get(f"/api/v1/sales/{registered.sale_id}/history").json()
    assert [e["to_state"] for e in timeline].count("delivery_scheduled") == 1
    missing_key = app_client.post(f"/api/v1/sales/{registered.sale_id}/delivery/dispatch")
    assert missing_key.status_code == 422
    assert missing_key.json()["field"] == "Idempotency-Key"


def test_another_dealership_gets_404_on_every_delivery_route(
    app_client: TestClient, db: Session, clock: FixedClock, registered: Order
) -> None:
    login(app_client, DEALERS["ES"])
    schedule(app_client, registered, clock.now().date())
    login(app_client, DEALERS["IT"])
    day = clock.now().date() + timedelta(days=1)
    assert schedule(app_client, registered, day, key="foreign-1").status_code == 404
    assert post(app_client, registered, "dispatch", "foreign-2").status_code == 404
    assert post(app_client, registered, "complete", "foreign-3").status_code == 404
    assert app_client.get(f"/api/v1/sales/{registered.sale_id}/delivery").status_code == 404
    assert sale_of(db, registered).state == "delivery_scheduled"


def test_the_customer_follows_the_delivery_but_cannot_move_it(
    app_client: TestClient, db: Session, clock: FixedClock, registered: Order
) -> None:
    login(app_client, DEALERS["ES"])
    schedule(app_client, registered, clock.now().date())
    let_customer_log_in(db, registered, clock.now())
    login(app_client, registered.customer_email)
    shown = app_client.get(f"/api/v1/sales/{registered.sale_id}/delivery")
    assert shown.status_code == 200
    assert shown.json()["carrier"] == "TransIb"
    assert post(app_client, registered, "dispatch", "customer-dispatch").status_code == 403
    login(app_client, "operator@caas.example")
    assert app_client.get(f"/api/v1/sales/{registered.sale_id}/delivery").status_code == 200
