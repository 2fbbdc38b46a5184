"""Workshops record services; the car's owner, workshops and operators read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import subject_history
from caas.core.settings import Settings
from caas.maintenance import service as maintenance
from caas.maintenance.models import MaintenanceRecord
from caas.protocol.mqtt import Telemetry
from caas.vehicles import ingest
from caas.vehicles.models import Vehicle
from tests.files.customers import SoldCustomer, car_for, login, sold_customer

VIN = "1M8GDM9AXKP042788"
DELIVERED = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def owner(db: Session, settings: Settings, clock: FixedClock) -> SoldCustomer:
    return sold_customer(db, settings=settings, now=DELIVERED - timedelta(days=90))


@pytest.fixture
def car(db: Session, owner: SoldCustomer) -> Vehicle:
    vehicle = car_for(
        db,
        owner.sale,
        vin=VIN,
        built_at=DELIVERED - timedelta(days=30),
        delivered_at=DELIVERED,
        plate="1234 BCD",
    )
    db.commit()
    return vehicle


def post_service(
    client: TestClient, body: dict[str, object], key: str = "service-key-0001", vin: str = VIN
) -> httpx.Response:
    return client.post(
        f"/api/v1/vehicles/{vin}/services", json=body, headers={"Idempotency-Key": key}
    )


def service_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "performed_at": "2026-01-10T10:30:00+01:00",
        "odometer_km": 18_900,
        "work_description": "12-month service: brakes, tyres, cabin filter",
    }
    body.update(overrides)
    return body


def test_workshop_records_a_service_once_per_key_and_it_reaches_the_timeline(
    app_client: TestClient, db: Session, car: Vehicle, owner: SoldCustomer
) -> None:
    login(app_client, "workshop@caas.example")
    first = post_service(app_client, service_body())
    assert first.status_code == 201, first.text
    again = post_service(app_client, service_body())
    assert again.json() == first.json()
    created = first.json()
    assert created["vin"] == VIN and created["workshop"] == "Walter Workshop"
    assert created["included_in_plan"] is True  # the sale included maintenance
    assert db.scalar(select(func.count(MaintenanceRecord.id))) == 1
    (entry,) = [e for e in subject_history(db, "vehicle", car.id) if e.event.startswith("maint")]
    assert entry.customer_id == owner.customer.id and entry.actor_label == "workshop@caas.example"
    assert entry.details["odometer_km"] == 18_900


def test_services_show_the_next_one_due_and_whether_the_car_is_late(
    app_client: TestClient, car: Vehicle, owner: SoldCustomer, clock: FixedClock
) -> None:
    login(app_client, owner.email)
    before = app_client.get(f"/api/v1/vehicles/{VIN}/services").json()
    assert before["services"] == []
    assert before["next_service"] == {
        "due_on": "2026-03-10",
        "due_km": 20_000,
        "counted_from": "delivery",
    }
    assert before["status"] == "compliant"  # the clock reads 2026-01-15
    login(app_client, "workshop@caas.example")
    post_service(app_client, service_body())
    post_service(
        app_client,
        service_body(
            performed_at="2026-01-14T09:00:00+00:00",
            odometer_km=19_000,
            work_description="Wiper blades replaced",
            included_in_plan=False,
        ),
        key="service-key-0002",
    )
    login(app_client, owner.email)
    after = app_client.get(f"/api/v1/vehicles/{VIN}/services").json()
    assert [s["odometer_km"] for s in after["services"]] == [19_000, 18_900]
    assert after["next_service"]["due_on"] == "2027-01-14"
    assert after["next_service"]["due_km"] == 39_000
    clock.set(datetime(2027, 2, 1, tzinfo=UTC))
    assert app_client.get(f"/api/v1/vehicles/{VIN}/services").json()["status"] == "overdue"


def test_the_odometer_the_car_reports_makes_it_overdue_before_any_workshop_sees_it(
    db: Session, app_client: TestClient, car: Vehicle, owner: SoldCustomer, clock: FixedClock
) -> None:
    login(app_client, owner.email)
    before = app_client.get(f"/api/v1/vehicles/{VIN}/services").json()
    assert (before["status"], before["odometer_km"]) == ("compliant", None)
    today = clock.now().date()
    assert maintenance.car_follows_plan(db, car, today=today)

    # Telemetry from the car: 20,412.7 km, past the 20,000 km due since delivery.
    sample = Telemetry(
        vin=VIN,
        seq=1,
        at=clock.now(),
        odometer_km=20_412.7,
        software_version="7.2.0",
        speed_kmh=0,
        parked=True,
    )
    assert ingest.store_telemetry(db, [sample], now=clock.now()) == 1
    db.commit()
    after = app_client.get(f"/api/v1/vehicles/{VIN}/services").json()
    assert (after["status"], after["odometer_km"]) == ("overdue", 20_412)
    assert after["next_service"]["due_km"] == 20_000  # still counted from delivery
    assert not maintenance.car_follows_plan(db, car, today=today)


@pytest.mark.parametrize(
    ("override", "field", "code"),
    [
        ({"odometer_km": 18_000}, "odometer_km", "maintenance.odometer_decreased"),
        # In the future of the clock (2026-01-15 09:00 UTC), and before the first service:
        ({"performed_at": "2026-01-16T09:00Z"}, "performed_at", "maintenance.performed_in_future"),
        ({"performed_at": "2025-12-01T09:00Z"}, "performed_at", "maintenance.before_last_service"),
        ({"performed_at": "2026-01-12T09:00:00"}, "performed_at", "invalid_input"),
        ({"odometer_km": -1}, "odometer_km", "invalid_input"),
        ({"work_description": "  "}, "work_description", "invalid_input"),
    ],
)  # fmt: skip
def test_a_service_that_does_not_fit_the_cars_story_is_422_naming_the_field(
    app_client: TestClient,
    db: Session,
    car: Vehicle,
    override: dict[str, object],
    field: str,
    code: str,
) -> None:
    login(app_client, "workshop@caas.example")
    assert post_service(app_client, service_body()).status_code == 201
    response = post_service(app_client, service_body(**override), key="service-key-0002")
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.json()["code"] == code
    assert db.scalar(select(func.count(MaintenanceRecord.id))) == 1


def test_recording_needs_the_workshop_role_and_an_idempotency_key(
    app_client: TestClient, car: Vehicle, owner: SoldCustomer
) -> None:
    login(app_client, owner.email)
    assert post_service(app_client, service_body()).status_code == 403
    login(app_client, "workshop@caas.example")
    response = app_client.post(f"/api/v1/vehicles/{VIN}/services", json=service_body())
    assert response.status_code == 422 and response.json()["field"] == "Idempotency-Key"
    unknown = post_service(app_client, service_body(), vin="WVWZZZ1JZXW000001")
    assert unknown.status_code == 404


def test_only_workshops_operators_and_the_owner_read_a_cars_services(
    app_client: TestClient,
    db: Session,
    car: Vehicle,
    owner: SoldCustomer,
    settings: Settings,
    clock: FixedClock,
) -> None:
    stranger = sold_customer(db, settings=settings, now=clock.now(), country="FR")
    db.commit()
    for reader in ("workshop@caas.example", "operator@caas.example", owner.email):
        login(app_client, reader)
        assert app_client.get(f"/api/v1/vehicles/{VIN}/services").status_code == 200
    for outsider in (stranger.email, "sales.madrid@caas.example"):
        login(app_client, outsider)
        response = app_client.get(f"/api/v1/vehicles/{VIN}/services")
        assert response.status_code == 404
        assert response.json()["code"] == "vehicle.not_found"


def test_a_bad_vin_in_the_path_is_422(app_client: TestClient) -> None:
    login(app_client, "workshop@caas.example")
    response = app_client.get("/api/v1/vehicles/NOT-A-VIN/services")
    assert response.status_code == 422 and response.json()["field"] == "vin"
