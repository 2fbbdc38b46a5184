"""The operator's console: every order with its filters, the catalog, any customer's file."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from tests.files.customers import sold_customer
from tests.web.support import log_in, text_of

OPERATOR = "operator@caas.example"


def test_the_operator_sees_every_dealerships_orders_and_filters_them(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    madrid = sold_customer(db, settings=settings, now=clock.now(), country="ES")
    lyon = sold_customer(db, settings=settings, now=clock.now(), country="FR")
    db.commit()
    log_in(app_client, OPERATOR)
    every = app_client.get("/operator/orders").text
    assert madrid.sale.number in every and lyon.sale.number in every
    assert lyon.sale.number not in app_client.get("/operator/orders?state=delivered").text
    found = app_client.get("/operator/orders", params={"search": lyon.customer.email}).text
    assert lyon.sale.number in found and madrid.sale.number not in found
    order = app_client.get(f"/operator/orders/{lyon.sale.id}")
    assert order.status_code == 200
    assert f'href="/operator/customers/{lyon.customer.id}"' in order.text
    assert "/intranet/sales/" not in order.text  # the operator reads; the dealer acts


def test_the_operator_filters_orders_by_country(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    madrid = sold_customer(db, settings=settings, now=clock.now(), country="ES")
    lyon = sold_customer(db, settings=settings, now=clock.now(), country="FR")
    db.commit()
    log_in(app_client, OPERATOR)
    french = app_client.get("/operator/orders?country=FR").text
    assert lyon.sale.number in french and madrid.sale.number not in french


def test_the_catalog_shows_platforms_options_and_prices_per_country(
    app_client: TestClient,
) -> None:
    log_in(app_client, OPERATOR)
    page = text_of(app_client.get("/operator/catalog").text)
    assert "Aura AURA" in page and "Boreal" in page and "Cirrus" in page
    assert "Service every 20,000 km or 12 months" in page
    assert "Base platform €29,000.00 €29,870.00 €30,450.00 €29,580.00 €28,710.00" in page
    assert "Motorway autopilot" in page
    assert "España (ES) EUR 21.00 % 10.00 %" in page


def test_the_operator_opens_any_customers_file(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    sold = sold_customer(db, settings=settings, now=clock.now(), country="IT")
    db.commit()
    log_in(app_client, OPERATOR)
    page = app_client.get(f"/operator/customers/{sold.customer.id}")
    assert page.status_code == 200
    assert sold.sale.number in page.text
    assert sold.customer.national_id in page.text
    assert "Sale closed" in text_of(page.text)
    assert app_client.get("/operator/customers/999999").status_code == 404
