"""The workshop's pages: find a car by VIN or plate, read what is due, record a service; and
the service then shows in the owner's file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.maintenance.models import MaintenanceRecord
from caas.vehicles.models import Vehicle
from tests.files.customers import SoldCustomer, car_for, sold_customer
from tests.web.support import log_in, submit, text_of

VIN = "1M8GDM9AXKP042788"
DELIVERED = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
WORKSHOP = "workshop@caas.example"


@pytest.fixture
def owner(db: Session, settings: Settings) -> SoldCustomer:
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


@pytest.mark.parametrize("typed", [VIN, VIN.lower(), "1234 BCD", "1234-bcd", "1234bcd"])
def test_the_workshop_finds_a_car_by_vin_or_plate(
    app_client: TestClient, car: Vehicle, typed: str
) -> None:
    log_in(app_client, WORKSHOP)
    found = app_client.get("/workshop", params={"q": typed}, follow_redirects=False)
    assert found.headers["location"] == f"/workshop/cars/{VIN}"


def test_an_unknown_car_says_so(app_client: TestClient, car: Vehicle) -> None:
    log_in(app_client, WORKSHOP)
    page = app_client.get("/workshop", params={"q": "9999 ZZZ"})
    assert page.status_code == 200
    assert 'id="q-error">No car with this VIN or plate.' in page.text
    assert app_client.get("/workshop/cars/WVWZZZ1JZXW000001").status_code == 404


def test_the_car_page_shows_the_plan_what_is_due_and_records_a_service(
    app_client: TestClient, db: Session, car: Vehicle, owner: SoldCustomer, clock: FixedClock
) -> None:
    log_in(app_client, WORKSHOP)
    page_url = f"/workshop/cars/{VIN}"
    page = text_of(app_client.get(page_url).text)
    assert "Service every 20,000 km or 12 months" in page
    assert "Next service due Mar 10, 2026 or at 20,000 km" in page

    backwards = submit(
        app_client,
        page_url,
        f"{page_url}/services",
        {"performed_at": "2026-01-10T10:30", "odometer_km": "-5", "work_description": "x"},
        with_key=True,
    )
    assert backwards.status_code == 422
    assert 'id="odometer_km-error"' in backwards.text
    assert 'value="2026-01-10T10:30"' in backwards.text

    done = submit(
        app_client,
        page_url,
        f"{page_url}/services",
        {
            "performed_at": "2026-01-10T10:30",
            "odometer_km": "18900",
            "work_description": "12-month service: brakes, tyres, cabin filter",
        },
        with_key=True,
    )
    assert done.status_code == 303, done.text
    record = db.scalars(select(MaintenanceRecord)).one()
    assert record.performed_at == datetime(2026, 1, 10, 9, 30, tzinfo=UTC)  # Madrid time
    assert record.included_in_plan is True  # the sale included maintenance
    page = text_of(app_client.get(page_url).text)
    assert "Service recorded." in page
    assert "18,900 km 12-month service: brakes, tyres, cabin filter" in page
    assert "Next service due Jan 10, 2027 or at 38,900 km" in page

    log_in(app_client, owner.email)
    file_page = text_of(app_client.get("/portal/file").text)
    assert "12-month service: brakes, tyres, cabin filter" in file_page
    assert db.scalar(select(func.count(MaintenanceRecord.id))) == 1
