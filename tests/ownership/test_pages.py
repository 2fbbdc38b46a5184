"""The pages of a change of owner and of an end of life, as a browser uses them: the owner's
"Sell this car", the buyer's "Receive a car", the dealership's resale form and the operator's
"Scrap" on the fleet's twin page, in English and Spanish."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.sales.models import Sale
from caas.vehicles.models import Vehicle
from tests.factories import customer_payload
from tests.ownership.conftest import Person, buyer
from tests.store.conftest import Owner, delivered_owner
from tests.store.engine import engine_keys, signing
from tests.vehicles.support import fresh_dni
from tests.web.support import log_in, submit, text_of

__all__ = ["engine_keys", "signing"]

CODE = re.compile(r"data-transfer-code>([0-9A-Z]{4}-[0-9A-Z]{4})<")


@pytest.fixture
def seller(db: Session, settings: Settings, clock: FixedClock, signing: SigningMaterial) -> Owner:
    owner = delivered_owner(db, settings, clock)
    db.get_one(Sale, owner.car.sale_id).state = "delivered"
    db.commit()
    return owner


@pytest.fixture
def bruno(db: Session, clock: FixedClock) -> Person:
    return buyer(db, clock.now())


def test_the_owner_sells_from_the_portal_and_the_buyer_receives_the_car(
    app_client: TestClient, db: Session, seller: Owner, bruno: Person
) -> None:
    vin = seller.vehicle.vin
    log_in(app_client, seller.user.email)
    cars = app_client.get("/portal/cars").text
    assert f'href="/portal/cars/{vin}/sell"' in cars and 'href="/portal/receive"' in cars
    page = f"/portal/cars/{vin}/sell"
    assert "Vender este coche" in app_client.get(page).text  # a Spanish customer
    opened = submit(app_client, page, page, {}, with_key=True)
    assert opened.status_code == 201, opened.text
    found = CODE.search(opened.text)
    assert found is not None
    code = found.group(1)
    again = app_client.get(page).text
    assert "data-transfer-open" in again and code not in again  # shown once only

    log_in(app_client, bruno.user.email)
    wrong = submit(
        app_client,
        "/portal/receive",
        "/portal/receive",
        {"vin": vin, "code": "AAAA-AAAA"},
        with_key=True,
    )
    assert wrong.status_code == 422
    assert "Este código no transfiere este coche" in text_of(wrong.text)  # Bruno is Spanish
    received = submit(
        app_client, "/portal/receive", "/portal/receive", {"vin": vin, "code": code}, with_key=True
    )
    assert received.status_code == 303 and received.headers["location"] == "/portal/cars"
    assert vin in app_client.get("/portal/cars").text
    buyers_file = app_client.get("/portal/file")
    assert buyers_file.status_code == 200 and vin in buyers_file.text  # a file with the car
    db.expire_all()
    assert db.get_one(Vehicle, seller.vehicle.id).owner_customer_id == bruno.customer.id
    # The seller's sell page is gone with the car; their file keeps the purchase.
    log_in(app_client, seller.user.email)
    assert app_client.get(page).status_code == 404
    assert app_client.get(f"/portal/cars/{vin}").status_code == 404
    assert app_client.get("/portal/file").status_code == 200


def test_the_owner_cancels_a_transfer(app_client: TestClient, seller: Owner) -> None:
    vin = seller.vehicle.vin
    log_in(app_client, seller.user.email)
    page = f"/portal/cars/{vin}/sell"
    submit(app_client, page, page, {}, with_key=True)
    cancelled = submit(app_client, page, f"{page}/cancel", {}, with_key=True)
    assert cancelled.status_code == 303
    after = app_client.get(page).text
    assert "data-open-transfer" in after and "transferencia está cancelada" in after


def test_a_dealer_records_a_resale_from_the_intranet(
    app_client: TestClient, db: Session, seller: Owner
) -> None:
    vin = seller.vehicle.vin
    log_in(app_client, "sales.madrid@caas.example")
    assert 'href="/intranet/resales/new"' in app_client.get("/intranet/sales").text
    buyer_fields = customer_payload("ES", national_id=fresh_dni(), email="eva.buyer@example.es")
    data = {f"buyer.{name}": value for name, value in buyer_fields.items()}
    page = "/intranet/resales/new"
    wrong = submit(
        app_client, page, page, {"vin": vin, "seller_national_id": "X", **data}, with_key=True
    )
    assert wrong.status_code == 404
    done = submit(
        app_client,
        page,
        page,
        {"vin": vin, "seller_national_id": seller.customer.national_id, **data},
        with_key=True,
    )
    assert done.status_code == 303, done.text
    db.expire_all()
    assert db.get_one(Vehicle, seller.vehicle.id).owner_customer_id != seller.customer.id


def test_the_operator_scraps_a_car_from_its_twin_page(
    app_client: TestClient, db: Session, seller: Owner
) -> None:
    vin = seller.vehicle.vin
    log_in(app_client, "operator@caas.example")
    page = f"/operator/fleet/{vin}"
    assert "data-scrap" in app_client.get(page).text
    refused = submit(
        app_client, page, f"{page}/scrap", {"reason": "", "certificate_number": ""}, with_key=True
    )
    assert refused.status_code == 303
    assert "The car was not scrapped" in app_client.get(page).text
    scrapped = submit(
        app_client,
        page,
        f"{page}/scrap",
        {"reason": "Total loss", "certificate_number": "CD-2026-7"},
        with_key=True,
    )
    assert scrapped.status_code == 303
    archived = app_client.get(page).text
    assert "data-archived" in archived and "data-scrap" not in archived
    db.expire_all()
    assert db.get_one(Vehicle, seller.vehicle.id).state == "archived"


def test_a_person_without_an_account_receives_the_car_on_the_public_page(
    app_client: TestClient, db: Session, seller: Owner
) -> None:
    vin = seller.vehicle.vin
    log_in(app_client, seller.user.email)
    page = f"/portal/cars/{vin}/sell"
    opened = submit(app_client, page, page, {}, with_key=True)
    assert "http://testserver/receive" in text_of(opened.text)
    found = CODE.search(opened.text)
    assert found is not None
    app_client.post("/logout", data={}, follow_redirects=False)
    app_client.cookies.clear()
    person = customer_payload("ES", national_id=fresh_dni(), email="fede.new@example.es")
    data = {"vin": vin, "code": found.group(1), **{f"buyer.{k}": v for k, v in person.items()}}
    wrong = submit(app_client, "/receive", "/receive", {**data, "code": "AAAA-AAAA"}, with_key=True)
    assert wrong.status_code == 422 and 'value="fede.new@example.es"' in wrong.text
    done = submit(app_client, "/receive", "/receive", data, with_key=True)
    assert done.status_code == 201, done.text
    assert "fede.new@example.es" in text_of(done.text)
    db.expire_all()
    assert db.get_one(Vehicle, seller.vehicle.id).owner_customer_id != seller.customer.id
