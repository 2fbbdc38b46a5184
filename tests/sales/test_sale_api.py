"""Closing a sale over HTTP: validation, quote, scoping and the activation e-mail."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.sales.models import Customer, Sale
from caas.seed import DEMO_PASSWORD
from caas.worker import build_relay
from tests.conftest import SmtpInbox
from tests.factories import new_salesperson, sale_payload


def login(client: TestClient, email: str) -> None:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text


def close_sale(client: TestClient, payload: dict[str, Any], key: str = "sale-key-0001") -> Any:
    return client.post("/api/v1/sales", json=payload, headers={"Idempotency-Key": key})


def test_quote_shows_net_vat_total_and_deposit(app_client: TestClient) -> None:
    login(app_client, "sales.madrid@caas.example")
    plan = sale_payload()["plan"]
    quote = app_client.post("/api/v1/quotes", json={"country": "ES", "plan": plan}).json()
    assert quote["vat_rate_percent"] == "21.00"
    net = sum(line["net"]["amount_minor"] for line in quote["lines"])
    assert quote["net"]["amount_minor"] == net
    assert quote["total"]["amount_minor"] == net + quote["vat"]["amount_minor"]
    assert quote["deposit"]["amount_minor"] == round(quote["total"]["amount_minor"] / 10)


def test_sale_creates_customer_and_sends_activation_link_not_password(
    app_client: TestClient,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    smtp: SmtpInbox,
) -> None:
    login(app_client, "sales.madrid@caas.example")
    payload = sale_payload()
    response = close_sale(app_client, payload)
    assert response.status_code == 201, response.text
    sale = response.json()
    assert sale["state"] == "awaiting_deposit"
    assert sale["customer"]["phone"] == "+34612345678"
    assert smtp.messages == []  # nothing leaves before the relay runs after commit
    build_relay(settings, sessions, clock).run_once()
    (mail,) = smtp.to(payload["customer"]["email"])
    body = smtp.text_of(mail)
    assert "http://testserver/activate?token=" in body
    assert DEMO_PASSWORD not in body
    assert mail["Subject"].startswith("Bienvenido")


def test_retried_sale_with_same_key_closes_one_sale(app_client: TestClient, db: Session) -> None:
    login(app_client, "sales.madrid@caas.example")
    payload = sale_payload()
    first = close_sale(app_client, payload, key="retry-key-123")
    second = close_sale(app_client, payload, key="retry-key-123")
    assert first.json() == second.json()
    assert db.scalar(select(func.count(Sale.id))) == 1


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"national_id": "12345678A"}, "customer.national_id"),
        ({"email": "not-an-email"}, "customer.email"),
        ({"phone": "123"}, "customer.phone"),
        ({"postal_code": "99999"}, "customer.postal_code"),
    ],
)
def test_bad_identity_answers_422_naming_the_field_and_writes_nothing(
    app_client: TestClient, db: Session, override: dict[str, str], field: str
) -> None:
    login(app_client, "sales.madrid@caas.example")
    response = close_sale(app_client, sale_payload(**override))
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert db.scalar(select(func.count(Customer.id))) == 0


def test_unknown_option_is_422_on_its_index(app_client: TestClient, db: Session) -> None:
    login(app_client, "sales.madrid@caas.example")
    payload = sale_payload()
    payload["plan"]["features"] = ["driver_assist", "teleporter"]
    response = close_sale(app_client, payload)
    assert response.status_code == 422
    assert response.json()["field"] == "plan.features.1"
    assert db.scalar(select(func.count(Sale.id))) == 0


def test_an_option_without_the_option_it_needs_is_422_on_its_index(
    app_client: TestClient, db: Session
) -> None:
    login(app_client, "sales.madrid@caas.example")
    payload = sale_payload()
    payload["plan"]["platform"] = "CIRRUS"
    payload["plan"]["features"] = ["motorway_autopilot"]
    response = close_sale(app_client, payload)
    assert response.status_code == 422
    assert (response.json()["field"], response.json()["code"]) == (
        "plan.features.0",
        "plan.feature_requires",
    )
    payload["plan"]["features"] = ["driver_assist", "motorway_autopilot"]
    assert close_sale(app_client, payload, key="sale-key-0002").status_code == 201


def test_dealer_sees_only_own_dealership_sales(
    app_client: TestClient, db: Session, clock: FixedClock
) -> None:
    login(app_client, "sales.madrid@caas.example")
    madrid_sale = close_sale(app_client, sale_payload()).json()
    login(app_client, "sales.lyon@caas.example")
    assert app_client.get(f"/api/v1/sales/{madrid_sale['id']}").status_code == 404
    assert app_client.get("/api/v1/sales").json()["total"] == 0
    colleague = new_salesperson(db, "MAD01", clock.now())
    db.commit()
    login(app_client, colleague.email)
    assert app_client.get(f"/api/v1/sales/{madrid_sale['id']}").status_code == 200


def test_anonymous_cannot_close_sales(app_client: TestClient) -> None:
    assert close_sale(app_client, sale_payload()).status_code == 401


def test_quote_amounts_follow_the_accept_language(app_client: TestClient) -> None:
    login(app_client, "sales.madrid@caas.example")
    body = {"country": "ES", "plan": sale_payload()["plan"]}
    spanish = app_client.post("/api/v1/quotes", json=body, headers={"Accept-Language": "es-ES"})
    english = app_client.post("/api/v1/quotes", json=body, headers={"Accept-Language": "en"})
    assert spanish.json()["total"]["formatted"].endswith("€")
    assert english.json()["total"]["formatted"].startswith("€")
