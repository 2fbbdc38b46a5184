"""The pages of upkeep: the customer confirms a proposal with one tap and sets the standing
consent; the workshop sees the booking in its calendar and records it done."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.upkeep import consent, orders
from caas.upkeep.models import ServiceOrder
from caas.vehicles.models import Vehicle
from tests.files.customers import SoldCustomer, car_for, sold_customer
from tests.web.support import log_in, submit, text_of

VIN = "UPK0PAGES00000001"
DELIVERED = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
PAGE = "/portal/upkeep"


@pytest.fixture
def owner(db: Session, settings: Settings) -> SoldCustomer:
    return sold_customer(db, settings=settings, now=DELIVERED - timedelta(days=60))


@pytest.fixture
def car(db: Session, owner: SoldCustomer) -> Vehicle:
    vehicle = car_for(
        db, owner.sale, vin=VIN, built_at=DELIVERED - timedelta(days=20), delivered_at=DELIVERED
    )
    db.commit()
    return vehicle


def test_the_customer_confirms_with_one_tap_and_the_workshop_records_it_done(
    app_client: TestClient, db: Session, owner: SoldCustomer, car: Vehicle, clock: FixedClock
) -> None:
    order = orders.propose(
        db, vehicle_id=car.id, need="battery_12v", detail={}, actor=Actor.system(), now=clock.now()
    )
    assert order is not None
    db.commit()
    log_in(app_client, owner.email)
    page = app_client.get(PAGE)
    assert page.status_code == 200
    shown = text_of(page.text)
    assert "Batería de 12 V" in shown and "Pendiente de usted" in shown and "Taller Norte" in shown
    first = re.search(r'name="slot_start" value="([^"]+)" checked', page.text)
    assert first is not None
    answer = submit(
        app_client,
        PAGE,
        f"{PAGE}/orders/{order.id}/confirm",
        {"slot_start": first.group(1), "idempotency_key": "tap-0001"},
    )
    assert answer.status_code == 303
    db.expire_all()
    booked = db.get_one(ServiceOrder, order.id)
    assert booked.state == "parts_reserved"
    assert booked.slot_start == datetime.fromisoformat(first.group(1))
    assert "Reservada, piezas listas" in text_of(app_client.get(PAGE).text)

    log_in(app_client, "workshop@caas.example")
    calendar = app_client.get("/workshop/upkeep")
    assert f'data-service-order="{order.id}"' in calendar.text and VIN in calendar.text
    done = submit(
        app_client,
        "/workshop/upkeep",
        f"/workshop/upkeep/orders/{order.id}/done",
        {"odometer_km": "24000", "idempotency_key": "done-0001"},
    )
    assert done.status_code == 303
    db.expire_all()
    assert db.get_one(ServiceOrder, order.id).state == "done"


def test_the_standing_consent_form_saves_and_another_customer_gets_404(
    app_client: TestClient, db: Session, owner: SoldCustomer, car: Vehicle, clock: FixedClock,
    settings: Settings,
) -> None:  # fmt: skip
    log_in(app_client, owner.email)
    saved = submit(
        app_client,
        PAGE,
        f"{PAGE}/preferences",
        {
            "auto_order": "on",
            "auto_limit": "250",
            "preferred_workshop_id": "",
            "idempotency_key": "prefs-0001",
        },
    )
    assert saved.status_code == 303
    preference = consent.preference_of(db, owner.customer.id)
    assert preference is not None and preference.auto_order
    assert preference.auto_limit_minor == 25_000
    order = orders.propose(
        db, vehicle_id=car.id, need="brake_pads", detail={}, actor=Actor.system(), now=clock.now()
    )
    assert order is not None and order.state == "parts_reserved"  # 175.45 EUR is within 250
    db.commit()
    stranger = sold_customer(
        db, settings=settings, now=clock.now(), national_id="87654321X", email="other@example.com"
    )
    db.commit()
    log_in(app_client, stranger.email)
    refused = submit(
        app_client, PAGE, f"{PAGE}/orders/{order.id}/cancel", {"idempotency_key": "cancel-0001"}
    )
    assert refused.status_code == 404
    db.expire_all()
    assert db.get_one(ServiceOrder, order.id).state == "parts_reserved"
