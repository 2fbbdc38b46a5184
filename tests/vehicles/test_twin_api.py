"""The digital twin over HTTP: the owner sees their own car, the operator any car and the fleet;
nobody else finds it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial
from caas.protocol.mqtt import Reported, Status, Telemetry
from caas.seed import DEMO_PASSWORD
from caas.vehicles import ingest, twin
from caas.vehicles.models import Vehicle
from tests.registration.support import DEALERS, login
from tests.vehicles.support import FACTORY, Car, born_car, deliver, signing

__all__ = ["signing"]

OPERATOR = "operator@caas.example"


@pytest.fixture
def car(db: Session, settings: Settings, clock: FixedClock, signing: SigningMaterial) -> Car:
    return born_car(db, settings=settings, now=clock.now())


def log_in_as_owner(client: TestClient, db: Session, car: Car, clock: FixedClock) -> None:
    user = db.get_one(User, car.customer_user_id)
    user.password_hash = hash_password(DEMO_PASSWORD)
    user.activated_at = clock.now()
    db.commit()
    login(client, car.customer_email)


def answer(
    db: Session, car: Car, version: int, status: str, clock: FixedClock, **extra: object
) -> None:
    reported = Reported.model_validate(
        {"vin": car.vin, "version": version, "status": status, "at": clock.now(), **extra}
    )
    ota.record_report(db, reported, now=clock.now())


def test_the_owner_sees_their_cars_twin(
    app_client: TestClient, db: Session, clock: FixedClock, car: Car
) -> None:
    answer(db, car, 1, "applied", clock)
    delivered_at = clock.advance(timedelta(days=30))
    deliver(db, car, now=delivered_at)
    ingest.store_status(
        db, Status(vin=car.vin, online=True, at=clock.now(), software_version="7.2.0"),
        now=clock.now(),
    )  # fmt: skip
    ingest.store_telemetry(
        db,
        [Telemetry(vin=car.vin, seq=5, at=clock.now(), odometer_km=42.5,
                   software_version="7.2.0", speed_kmh=0, parked=True, battery_percent=80)],
        now=clock.now(),
    )  # fmt: skip
    log_in_as_owner(app_client, db, car, clock)

    response = app_client.get(f"/api/v1/vehicles/{car.vin.lower()}/twin")
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["vin"] == car.vin
    assert shown["model"] == {"code": "AURA", "name": "Aura"}
    assert shown["owner"]["customer_id"] == car.customer_id
    assert (shown["software_version"], shown["fitted_hardware"]) == ("7.2.0", ["driver_assist"])
    assert shown["connection"]["online"] is True
    assert (shown["telemetry"]["odometer_km"], shown["telemetry"]["parked"]) == (42.5, True)

    assert (shown["desired"]["version"], shown["desired"]["state"]) == (2, "pending")
    assert [f["code"] for f in shown["desired"]["features"] if f["enabled"]] == ["driver_assist"]
    assert shown["reported"] == {
        "version": 1,
        "reported_at": shown["reported"]["reported_at"],
        "active_features": [],
    }
    assert shown["pending"] == {
        "version": 2,
        "waiting_for": "car",
        "since": delivered_at.isoformat().replace("+00:00", "Z"),
        "published_at": None,
    }
    capabilities = {c["code"]: c for c in shown["capabilities"]}
    assert capabilities["driver_assist"]["runnable"] and capabilities["driver_assist"]["desired"]
    assert not capabilities["driver_assist"]["on_in_car"]
    assert capabilities["entertainment"]["runnable"] is False
    assert capabilities["entertainment"]["reason_code"] == "feature.not_eligible.hardware_missing"
    assert (
        capabilities["power_boost"]["runnable"] and capabilities["power_boost"]["affects_driving"]
    )
    assert [v["version"] for v in shown["versions"]] == [2, 1]
    assert [e["event"] for e in shown["history"]][:2] == ["car.born", "configuration.issued"]


def test_a_change_waiting_to_be_parked_and_a_rejection_show_as_such(
    app_client: TestClient, db: Session, clock: FixedClock, car: Car
) -> None:
    deliver(db, car, now=clock.now())
    answer(db, car, 2, "deferred", clock, reason="waiting_to_be_parked")
    log_in_as_owner(app_client, db, car, clock)
    shown = app_client.get(f"/api/v1/vehicles/{car.vin}/twin").json()
    assert shown["pending"]["waiting_for"] == "park"
    assert shown["desired"]["report_reason"] == "waiting_to_be_parked"

    version = ota.request_configuration(
        db, db.get_one(Vehicle, car.vehicle_id), reason="test", actor=FACTORY, now=clock.now()
    ).version
    answer(db, car, version, "rejected", clock, reason="certificate_expired")
    db.commit()
    shown = app_client.get(f"/api/v1/vehicles/{car.vin}/twin").json()
    assert shown["pending"] is None
    assert (shown["desired"]["state"], shown["desired"]["report_reason"]) == (
        "rejected",
        "certificate_expired",
    )
    rejected = [e for e in shown["history"] if e["event"] == "configuration.rejected"]
    assert rejected[0]["actor"] == f"vehicle: {car.vin}"
    assert rejected[0]["details"]["reason"] == "certificate_expired"


def test_nobody_else_finds_the_car(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock, car: Car
) -> None:
    assert app_client.get(f"/api/v1/vehicles/{car.vin}/twin").status_code == 401
    other = born_car(db, settings=settings, now=clock.now())
    log_in_as_owner(app_client, db, other, clock)
    refused = app_client.get(f"/api/v1/vehicles/{car.vin}/twin")
    assert refused.status_code == 404
    assert refused.json()["code"] == "vehicle.not_found"
    assert app_client.get("/api/v1/vehicles/VCAAURA00TM000000/twin").json() == refused.json()
    assert app_client.get(f"/api/v1/vehicles/{other.vin}/twin").status_code == 200
    assert app_client.get("/api/v1/fleet").status_code == 403

    app_client.post("/api/v1/auth/logout")
    login(app_client, DEALERS["ES"])  # the dealer who sold it: still not theirs to watch
    assert app_client.get(f"/api/v1/vehicles/{car.vin}/twin").status_code == 404

    app_client.post("/api/v1/auth/logout")
    login(app_client, OPERATOR)
    assert app_client.get(f"/api/v1/vehicles/{car.vin}/twin").status_code == 200


def test_the_operator_filters_the_fleet(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock, car: Car
) -> None:
    settled = born_car(db, settings=settings, now=clock.now(), platform="CIRRUS")
    answer(db, settled, 1, "applied", clock)
    ingest.store_status(db, Status(vin=settled.vin, online=True, at=clock.now()), now=clock.now())
    db.commit()
    login(app_client, OPERATOR)

    def vins(query: str) -> list[str]:
        response = app_client.get(f"/api/v1/fleet{query}")
        assert response.status_code == 200, response.text
        return [item["vin"] for item in response.json()["items"]]

    ours = {car.vin, settled.vin}
    assert ours <= set(vins("?limit=200"))
    assert set(vins("?pending=true&limit=200")) & ours == {car.vin}
    assert set(vins("?pending=false&limit=200")) & ours == {settled.vin}
    assert set(vins("?online=true&limit=200")) & ours == {settled.vin}
    assert set(vins("?model=cirrus&limit=200")) & ours == {settled.vin}

    page = app_client.get("/api/v1/fleet?model=CIRRUS&online=true&limit=1").json()
    assert page["total"] >= 1 and len(page["items"]) == 1
    line = next(i for i in app_client.get("/api/v1/fleet?limit=200").json()["items"]
                if i["vin"] == car.vin)  # fmt: skip
    assert (line["desired_version"], line["applied_version"], line["pending_state"]) == (
        1,
        None,
        "pending",
    )
    assert line["pending_since"] is not None
    assert app_client.get("/api/v1/fleet?limit=0").status_code == 422


@contextmanager
def counting_queries(db: Session) -> Iterator[list[str]]:
    statements: list[str] = []
    connection = db.connection()

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(connection, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(connection, "before_cursor_execute", count)


def test_the_twin_is_read_in_a_fixed_number_of_queries(
    db: Session, clock: FixedClock, car: Car
) -> None:
    def read() -> int:
        db.flush()
        db.expire_all()
        vehicle = db.get_one(Vehicle, car.vehicle_id)
        with counting_queries(db) as statements:
            twin.twin_of(db, vehicle)
        return len(statements)

    few = read()
    for _ in range(5):
        clock.advance(timedelta(minutes=1))
        deliver(db, car, now=clock.now())
        answer(db, car, 2, "applied", clock)
    assert read() == few
    assert few <= 8
