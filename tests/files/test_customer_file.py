"""The customer's file: everything they have with the maker, and nobody else's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.maintenance.service import record_service
from tests.billing.conftest import PaymentSandbox
from tests.factories import new_salesperson
from tests.files.customers import (
    SoldCustomer,
    another_sale,
    car_for,
    login,
    pay_deposit,
    sold_customer,
)

VIN = "1M8GDM9AXKP042788"
SOLD_AT = datetime(2025, 1, 10, 10, 0, tzinfo=UTC)


@pytest.fixture
def ana(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> SoldCustomer:
    """A Spanish customer whose Aura was paid, built, delivered and serviced once."""
    clock.set(SOLD_AT)
    sold = sold_customer(db, settings=settings, now=SOLD_AT, country="ES")
    db.commit()
    clock.set(SOLD_AT + timedelta(days=1))
    pay_deposit(app_client, payment_sandbox, sold)
    clock.set(datetime(2026, 1, 15, 9, 0, tzinfo=UTC))
    car_for(
        db,
        sold.sale,
        vin=VIN,
        built_at=SOLD_AT + timedelta(days=40),
        delivered_at=SOLD_AT + timedelta(days=60),
        plate="1234 BCD",
    )
    workshop = db.query(User).filter_by(email="workshop@caas.example").one()
    record_service(
        db,
        vin=VIN,
        workshop=workshop,
        performed_at=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        odometer_km=17_250,
        work_description="12-month service",
        included_in_plan=None,
        now=clock.now(),
    )
    db.commit()
    return sold


def test_customer_file_has_purchase_manuals_maintenance_invoices_and_timeline(
    app_client: TestClient, ana: SoldCustomer
) -> None:
    login(app_client, ana.email)
    response = app_client.get("/api/v1/me/file")
    assert response.status_code == 200, response.text
    file = response.json()
    assert file["customer"]["national_id"] == "12345678Z"
    (purchase,) = file["purchases"]
    assert purchase["number"] == ana.sale.number
    assert purchase["state"] == "waiting_for_factory"
    assert purchase["state_label"] == "Waiting for the factory"
    assert purchase["quote"]["total"]["amount_minor"] == ana.sale.total_minor
    assert purchase["quote"]["lines"][0]["description"].startswith("Aura")
    assert purchase["paid"]["amount_minor"] == ana.sale.deposit_minor
    assert purchase["outstanding"]["amount_minor"] == ana.sale.total_minor - ana.sale.deposit_minor
    assert purchase["dealership"] == {
        "code": "MAD01",
        "name": "caas Madrid Castellana",
        "city": "Madrid",
        "address": "Paseo de la Castellana 100, 28046 Madrid",
    }
    assert (purchase["vin"], purchase["plate"]) == (VIN, "1234 BCD")
    assert file["manuals"] == [
        {
            "platform": "AURA",
            "platform_name": "Aura",
            "language": "es",
            "url": "/api/v1/platforms/AURA/manual.pdf?lang=es",
        }
    ]
    (car,) = file["maintenance"]
    assert car["vin"] == VIN and car["status"] == "compliant"
    assert [s["odometer_km"] for s in car["services"]] == [17_250]
    assert car["next_service"] == {
        "due_on": "2027-01-05",
        "due_km": 37_250,
        "counted_from": "last_service",
    }
    (invoice,) = file["invoices"]
    assert invoice["kind"] == "advance" and invoice["order_number"] == ana.sale.number
    assert invoice["gross"]["amount_minor"] == ana.sale.deposit_minor
    assert invoice["pdf_url"] == f"/api/v1/invoices/{invoice['id']}/pdf"
    events = [entry["event"] for entry in file["timeline"]]
    assert events[:2] == ["sale.closed", "account.activation_sent"]
    assert "order.waiting_for_factory" in events and "maintenance.recorded" in events


def test_links_in_the_file_open_for_the_customer(app_client: TestClient, ana: SoldCustomer) -> None:
    login(app_client, ana.email)
    file = app_client.get("/api/v1/me/file").json()
    manual = app_client.get(file["manuals"][0]["url"])
    assert manual.status_code == 200 and manual.headers["content-type"] == "application/pdf"
    invoice = app_client.get(file["invoices"][0]["pdf_url"])
    assert invoice.status_code == 200 and invoice.content.startswith(b"%PDF")


def test_timeline_shows_time_actor_and_states_oldest_first(
    app_client: TestClient, ana: SoldCustomer
) -> None:
    login(app_client, ana.email)
    timeline = app_client.get("/api/v1/me/timeline").json()
    assert [entry["at"] for entry in timeline] == sorted(entry["at"] for entry in timeline)
    moved = next(e for e in timeline if e["event"] == "order.waiting_for_factory")
    assert moved["from_state"] == "awaiting_deposit" and moved["to_state"] == "waiting_for_factory"
    assert moved["to_state_label"] == "Waiting for the factory"
    assert moved["actor"] == f"customer: {ana.email}" and moved["subject"] == "order"
    service = next(e for e in timeline if e["event"] == "maintenance.recorded")
    assert service["actor"] == "workshop: workshop@caas.example"
    assert service["details"]["odometer_km"] == 17_250


def test_a_customer_never_sees_another_customers_file(
    app_client: TestClient, db: Session, ana: SoldCustomer, settings: Settings, clock: FixedClock
) -> None:
    ben = sold_customer(db, settings=settings, now=clock.now(), country="FR")
    db.commit()
    login(app_client, ben.email)
    mine = app_client.get("/api/v1/me/file").json()
    assert [p["number"] for p in mine["purchases"]] == [ben.sale.number]
    assert mine["maintenance"] == [] and mine["invoices"] == []
    assert all(e["details"].get("number") != ana.sale.number for e in mine["timeline"])
    response = app_client.get(f"/api/v1/customers/{ana.customer.id}/file")
    assert response.status_code == 404 and response.json()["code"] == "customer.not_found"
    own = app_client.get(f"/api/v1/customers/{ben.customer.id}/file")
    assert own.status_code == 200


def test_operator_reads_any_file_and_staff_without_a_sale_get_404(
    app_client: TestClient, ana: SoldCustomer
) -> None:
    login(app_client, "operator@caas.example")
    file = app_client.get(f"/api/v1/customers/{ana.customer.id}/file").json()
    assert [p["number"] for p in file["purchases"]] == [ana.sale.number]
    assert app_client.get("/api/v1/customers/999999/file").status_code == 404
    for outsider in ("workshop@caas.example", "sales.lyon@caas.example"):
        login(app_client, outsider)
        assert app_client.get(f"/api/v1/customers/{ana.customer.id}/file").status_code == 404


def test_a_dealer_reads_their_customers_file_limited_to_their_dealerships_sales(
    app_client: TestClient, db: Session, ana: SoldCustomer, settings: Settings, clock: FixedClock
) -> None:
    lyon_sale = another_sale(db, ana, settings=settings, now=clock.now(), at_country="FR")
    colleague = new_salesperson(db, "MAD01", clock.now())
    db.commit()
    login(app_client, colleague.email)  # any salesperson of the dealership that sold
    madrid = app_client.get(f"/api/v1/customers/{ana.customer.id}/file").json()
    assert [p["number"] for p in madrid["purchases"]] == [ana.sale.number]
    assert len(madrid["invoices"]) == 1 and len(madrid["maintenance"]) == 1
    login(app_client, "sales.lyon@caas.example")
    lyon = app_client.get(f"/api/v1/customers/{ana.customer.id}/file").json()
    assert [p["number"] for p in lyon["purchases"]] == [lyon_sale.number]
    assert lyon["invoices"] == [] and lyon["maintenance"] == []
    assert [m["platform"] for m in lyon["manuals"]] == ["CIRRUS"]
    subjects = {(e["subject"], e["details"].get("number")) for e in lyon["timeline"]}
    assert ("order", lyon_sale.number) in subjects
    assert ("order", ana.sale.number) not in subjects
    assert all(e["event"] != "maintenance.recorded" for e in lyon["timeline"])
    login(app_client, ana.email)
    both = app_client.get("/api/v1/me/file").json()
    assert [p["number"] for p in both["purchases"]] == [lyon_sale.number, ana.sale.number]


def test_my_file_is_for_customers(app_client: TestClient) -> None:
    assert app_client.get("/api/v1/me/file").status_code == 401
    login(app_client, "operator@caas.example")
    assert app_client.get("/api/v1/me/file").status_code == 403
    assert app_client.get("/api/v1/me/timeline").status_code == 403
