"""The operator's fleet page filters by the software version the cars run."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.vehicles.models import Vehicle
from tests.registration.support import login
from tests.vehicles.support import Car, signing
from tests.vehicles.test_twin_api import OPERATOR
from tests.vehicles.test_twin_pages import car

__all__ = ["car", "signing"]


def test_the_operator_filters_the_fleet_by_software_version(
    app_client: TestClient, db: Session, car: Car
) -> None:
    db.get_one(Vehicle, car.vehicle_id).software_version = "7.3.1"
    db.commit()
    login(app_client, OPERATOR)
    page = app_client.get("/operator/fleet").text
    assert '<option value="7.3.1">7.3.1</option>' in page
    running = app_client.get("/operator/fleet", params={"software": "7.3.1"})
    assert running.status_code == 200
    assert f'data-vin="{car.vin}"' in running.text
    assert '<option value="7.3.1" selected>' in running.text
    other = app_client.get("/operator/fleet", params={"software": "7.2.0"}).text
    assert f'data-vin="{car.vin}"' not in other
