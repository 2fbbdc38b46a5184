"""The digital twin's pages: the owner's cars and the operator's fleet."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial
from caas.protocol.mqtt import Reported, Status
from caas.vehicles import ingest
from tests.registration.support import login
from tests.vehicles.support import Car, born_car, deliver, signing
from tests.vehicles.test_twin_api import OPERATOR, log_in_as_owner

__all__ = ["signing"]


@pytest.fixture
def car(db: Session, settings: Settings, clock: FixedClock, signing: SigningMaterial) -> Car:
    car = born_car(db, settings=settings, now=clock.now())
    ota.record_report(
        db,
        Reported(vin=car.vin, version=1, status="applied", at=clock.now()),
        now=clock.now(),
    )
    deliver(db, car, now=clock.now())
    return car


def test_the_owner_sees_what_the_car_runs_and_what_is_on_its_way(
    app_client: TestClient, db: Session, clock: FixedClock, car: Car
) -> None:
    log_in_as_owner(app_client, db, car, clock)
    cars = app_client.get("/portal/cars")
    assert cars.status_code == 200
    assert f'href="/portal/cars/{car.vin}"' in cars.text

    page = app_client.get(f"/portal/cars/{car.vin}")
    assert page.status_code == 200, page.text
    assert "La versión 2 va de camino al coche desde" in page.text  # the owner's language
    assert 'data-online="no"' in page.text
    assert 'data-not-runnable="feature.not_eligible.hardware_missing"' in page.text
    assert "El coche aplicó su configuración" in page.text


def test_a_refusal_is_explained_to_the_owner(
    app_client: TestClient, db: Session, clock: FixedClock, car: Car
) -> None:
    ota.record_report(
        db,
        Reported(
            vin=car.vin, version=2, status="rejected", reason="certificate_expired", at=clock.now()
        ),
        now=clock.now(),
    )
    log_in_as_owner(app_client, db, car, clock)
    page = app_client.get(f"/portal/cars/{car.vin}")
    assert (
        "El coche ha rechazado la versión 2: el certificado de firma no es válido ahora."
        in page.text
    )


def test_another_customer_does_not_find_the_car(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock, car: Car
) -> None:
    other = born_car(db, settings=settings, now=clock.now())
    log_in_as_owner(app_client, db, other, clock)
    assert app_client.get(f"/portal/cars/{car.vin}").status_code == 404
    assert app_client.get("/operator/fleet").status_code == 403


def test_the_operator_filters_the_fleet_and_opens_a_car(
    app_client: TestClient, db: Session, clock: FixedClock, car: Car
) -> None:
    ingest.store_status(db, Status(vin=car.vin, online=True, at=clock.now()), now=clock.now())
    db.commit()
    login(app_client, OPERATOR)
    waiting = app_client.get("/operator/fleet?pending=yes&online=yes&model=AURA")
    assert waiting.status_code == 200
    assert f'data-vin="{car.vin}"' in waiting.text
    settled = app_client.get("/operator/fleet?pending=no")
    assert f'data-vin="{car.vin}"' not in settled.text
    page = app_client.get(f"/operator/fleet/{car.vin}")
    assert page.status_code == 200
    assert "Version 2 is on its way to the car since" in page.text  # the operator's English
    assert 'data-online="yes"' in page.text
    assert 'data-pending="car"' in page.text
