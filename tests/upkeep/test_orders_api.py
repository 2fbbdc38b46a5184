"""The upkeep API from the outside: the owner confirms and cancels with Idempotency-Keys,
sets the standing consent, the workshop sees its calendar and records the work; another
customer and another workshop get 404."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import Role
from caas.accounts.service import create_user
from caas.core.clock import FixedClock
from caas.core.history import Actor, HistoryEntry
from caas.core.settings import Settings
from caas.seed import DEMO_PASSWORD
from caas.upkeep import orders
from caas.upkeep.models import ServiceOrder, Workshop, WorkshopStaff
from caas.vehicles.models import Vehicle
from tests.files.customers import SoldCustomer, car_for, login, sold_customer

VIN = "UPK0API0000000001"
DELIVERED = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)


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


@pytest.fixture
def proposed(db: Session, car: Vehicle, clock: FixedClock) -> ServiceOrder:
    order = orders.propose(
        db, vehicle_id=car.id, need="brake_pads", detail={}, actor=Actor.system(), now=clock.now()
    )
    assert order is not None
    db.commit()
    return order


def customer_history(db: Session, customer_id: int) -> list[HistoryEntry]:
    return list(
        db.scalars(
            select(HistoryEntry)
            .where(HistoryEntry.customer_id == customer_id)
            .order_by(HistoryEntry.id)
        )
    )


def post(client: TestClient, path: str, body: dict[str, object], key: str) -> object:
    return client.post(f"/api/v1/upkeep{path}", json=body, headers={"Idempotency-Key": key})


def test_the_owner_confirms_once_per_key_and_the_workshop_records_it_done(
    app_client: TestClient, db: Session, owner: SoldCustomer, proposed: ServiceOrder
) -> None:
    login(app_client, owner.email)
    (listed,) = app_client.get("/api/v1/upkeep/orders").json()
    assert listed["state"] == "proposed" and listed["gross_minor"] == 17_545
    assert listed["workshop"] == "Taller Norte" and len(listed["offered_slots"]) == 5
    slot = listed["offered_slots"][1]["start"]
    confirmed = app_client.post(
        f"/api/v1/upkeep/orders/{proposed.id}/confirm",
        json={"slot_start": slot},
        headers={"Idempotency-Key": "confirm-0001"},
    )
    assert confirmed.status_code == 200, confirmed.text
    again = app_client.post(
        f"/api/v1/upkeep/orders/{proposed.id}/confirm",
        json={"slot_start": slot},
        headers={"Idempotency-Key": "confirm-0001"},
    )
    assert again.json() == confirmed.json()
    assert confirmed.json()["state"] == "parts_reserved"
    assert datetime.fromisoformat(confirmed.json()["slot"]["start"]) == datetime.fromisoformat(slot)
    login(app_client, "workshop@caas.example")
    (booked,) = app_client.get("/api/v1/upkeep/workshop/bookings").json()
    assert booked["id"] == proposed.id
    done = app_client.post(
        f"/api/v1/upkeep/orders/{proposed.id}/done",
        json={"odometer_km": 25_000},
        headers={"Idempotency-Key": "done-0001"},
    )
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "done"
    events = [
        e.event for e in customer_history(db, owner.customer.id) if e.event.startswith("upkeep.")
    ]
    assert events[:4] == [
        "upkeep.proposed",
        "upkeep.confirmed",
        "upkeep.parts_reserved",
        "upkeep.done",
    ]


def test_another_customer_and_another_workshop_get_404(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    proposed: ServiceOrder,
) -> None:
    stranger = sold_customer(db, settings=settings, now=clock.now(), national_id="87654321X",
                             email="stranger@example.com")  # fmt: skip
    other = create_user(
        db,
        email="taller.diagonal@caas.example",
        full_name="Toni Taller",
        role=Role.WORKSHOP,
        password=DEMO_PASSWORD,
        now=clock.now(),
    )
    barcelona = db.scalars(select(Workshop).where(Workshop.code == "TBCN1")).one()
    db.add(WorkshopStaff(user_id=other.id, workshop_id=barcelona.id))
    db.commit()
    login(app_client, stranger.email)
    assert app_client.get(f"/api/v1/upkeep/orders/{proposed.id}").status_code == 404
    refused = post(app_client, f"/orders/{proposed.id}/cancel", {"reason": "x"}, "cancel-s1")
    assert refused.status_code == 404  # type: ignore[attr-defined]
    assert app_client.get("/api/v1/upkeep/orders").json() == []
    login(app_client, other.email)
    assert app_client.get(f"/api/v1/upkeep/orders/{proposed.id}").status_code == 404
    refused = post(app_client, f"/orders/{proposed.id}/cancel", {"reason": "x"}, "cancel-w1")
    assert refused.status_code == 404  # type: ignore[attr-defined]
    db.expire_all()
    assert db.get_one(ServiceOrder, proposed.id).state == "proposed"


def test_standing_consent_is_off_by_default_and_bad_input_changes_nothing(
    app_client: TestClient, db: Session, owner: SoldCustomer
) -> None:
    login(app_client, owner.email)
    assert app_client.get("/api/v1/upkeep/preferences").json() == {
        "auto_order": False,
        "auto_limit_minor": 0,
        "preferred_workshop_id": None,
        "currency": "EUR",
    }
    bad = app_client.put(
        "/api/v1/upkeep/preferences",
        json={"auto_order": True, "auto_limit_minor": -5},
        headers={"Idempotency-Key": "prefs-0001"},
    )
    assert bad.status_code == 422 and bad.json()["field"] == "auto_limit_minor"
    unknown = app_client.put(
        "/api/v1/upkeep/preferences",
        json={"auto_order": True, "auto_limit_minor": 100, "preferred_workshop_id": 999_999},
        headers={"Idempotency-Key": "prefs-0002"},
    )
    assert unknown.status_code == 422
    assert app_client.get("/api/v1/upkeep/preferences").json()["auto_order"] is False
    (diagonal,) = [
        w
        for w in app_client.get("/api/v1/upkeep/workshops").json()
        if w["name"] == "Taller Diagonal"
    ]
    saved = app_client.put(
        "/api/v1/upkeep/preferences",
        json={
            "auto_order": True,
            "auto_limit_minor": 15_000,
            "preferred_workshop_id": diagonal["id"],
        },
        headers={"Idempotency-Key": "prefs-0003"},
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["auto_limit_minor"] == 15_000
    (entry,) = [
        e
        for e in customer_history(db, owner.customer.id)
        if e.event == "upkeep.preferences_changed"
    ]
    assert entry.details["after"]["preferred_workshop_id"] == diagonal["id"]
