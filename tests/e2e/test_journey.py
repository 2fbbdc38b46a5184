"""The whole journey, from the dealer's sale to the car at the customer's door, over HTTP.

Every piece runs as it does in production: the platform's API and its worker on a real
PostgreSQL, the factory, registry and payment provider simulators as HTTP servers, and a real
SMTP server that receives the customer's e-mails. Each step below is one step of the mission.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import httpx
import pytest

from caas.sales.rules import FACTORY_STAGES
from caas.seed import DEMO_PASSWORD
from tests.e2e.conftest import World
from tests.factories import sale_payload
from tests.servers import wait_until

pytestmark = pytest.mark.e2e

SPANISH_PLATE = re.compile(r"^\d{4} [BCDFGHJKLMNPRSTVWXYZ]{3}$")
CUSTOMER_PASSWORD = "my-own-long-password"


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    return response.json()


def _order(client: httpx.Client, sale_id: int) -> dict[str, Any]:
    order: dict[str, Any] = _ok(client.get(f"/api/v1/sales/{sale_id}"))
    return order


def _wait_for_state(client: httpx.Client, sale_id: int, state: str) -> dict[str, Any]:
    wait_until(lambda: _order(client, sale_id)["state"] == state, timeout=20)
    return _order(client, sale_id)


def _pay(world: World, customer: httpx.Client, sale_id: int, kind: str) -> dict[str, Any]:
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    token = _ok(httpx.post(f"{world.payments}/v1/tokens", json=card), 201)["id"]
    payment: dict[str, Any] = _ok(
        customer.post(
            f"/api/v1/sales/{sale_id}/payments",
            json={"kind": kind, "card_token": token},
            headers={"Idempotency-Key": f"pay-{kind}-{sale_id}"},
        ),
        201,
    )
    return payment


def test_from_the_dealers_sale_to_the_car_at_the_customers_door(world: World) -> None:
    dealer = httpx.Client(base_url=world.platform, timeout=10)
    customer = httpx.Client(base_url=world.platform, timeout=10)

    # 1. Sale at the dealer: quote first, then close the sale.
    _ok(
        dealer.post(
            "/api/v1/auth/login",
            json={"email": "sales.madrid@caas.example", "password": DEMO_PASSWORD},
        )
    )
    payload = sale_payload("ES")
    quote = _ok(dealer.post("/api/v1/quotes", json={"country": "ES", "plan": payload["plan"]}))
    sale = _ok(
        dealer.post("/api/v1/sales", json=payload, headers={"Idempotency-Key": "e2e-sale-0001"}),
        201,
    )
    assert sale["quote"]["total"] == quote["total"]
    sale_id = sale["id"]
    email = payload["customer"]["email"]

    # 2. Customer account: the activation e-mail carries a link, never a password.
    wait_until(lambda: bool(world.smtp.to(email)))
    body = world.smtp.text_of(world.smtp.to(email)[0])
    match = re.search(r"/activate\?token=([\w-]+)", body)
    assert match is not None
    _ok(
        customer.post(
            "/api/v1/auth/activate", json={"token": match.group(1), "password": CUSTOMER_PASSWORD}
        )
    )
    _ok(customer.post("/api/v1/auth/login", json={"email": email, "password": CUSTOMER_PASSWORD}))

    # 3. Reservation: the deposit is paid and the order goes to the factory by itself.
    deposit = _pay(world, customer, sale_id, "deposit")
    assert deposit["amount"]["amount_minor"] == quote["deposit"]["amount_minor"]
    _wait_for_state(customer, sale_id, "ordered")
    factory_order = _ok(httpx.get(f"{world.factory}/sim/orders"))
    assert [o for o in factory_order if sale["number"] in str(o)], factory_order

    # 4. Manufacturing: each stage reported by the factory, signed, moves the order.
    for stage in FACTORY_STAGES:
        _ok(httpx.post(f"{world.factory}/sim/orders/{sale['number']}/advance"))
        _wait_for_state(customer, sale_id, stage)

    # 5. Final payment, then registration with the Spanish authority.
    final = _pay(world, customer, sale_id, "final")
    assert (
        deposit["amount"]["amount_minor"] + final["amount"]["amount_minor"]
        == quote["total"]["amount_minor"]
    )
    _wait_for_state(customer, sale_id, "registered")

    # 6. Delivery to the customer's address, step by step, by the dealer.
    today = date.today().isoformat()
    delivery_steps = [
        ("delivery", {"scheduled_for": today, "carrier": "TransAuto"}, 201, "delivery_scheduled"),
        ("delivery/dispatch", {}, 200, "in_transit"),
        ("delivery/complete", {}, 200, "delivered"),
    ]
    for path, body_json, status, state in delivery_steps:
        _ok(
            dealer.post(
                f"/api/v1/sales/{sale_id}/{path}",
                json=body_json,
                headers={"Idempotency-Key": f"e2e-{path.replace('/', '-')}-{sale_id}"},
            ),
            status,
        )
        assert _order(customer, sale_id)["state"] == state

    # The customer's file: purchase, manuals, invoices and the whole story.
    file = _ok(customer.get("/api/v1/me/file"))
    (purchase,) = file["purchases"]
    assert purchase["state"] == "delivered"
    assert SPANISH_PLATE.match(purchase["plate"]), purchase["plate"]
    assert len(purchase["vin"]) == 17
    assert purchase["outstanding"]["amount_minor"] == 0
    invoices = file["invoices"]
    assert len(invoices) == 2
    assert sum(i["gross"]["amount_minor"] for i in invoices) == quote["total"]["amount_minor"]
    for invoice in invoices:
        pdf = customer.get(invoice["pdf_url"])
        assert pdf.status_code == 200
        assert pdf.content.startswith(b"%PDF")
    (manual,) = file["manuals"]
    assert customer.get(manual["url"]).content.startswith(b"%PDF")
    reached = [entry["to_state"] for entry in file["timeline"] if entry["subject"] == "order"]
    expected = [
        "awaiting_deposit",
        "waiting_for_factory",
        "ordered",
        *FACTORY_STAGES,
        "registering",
        "registered",
        "delivery_scheduled",
        "in_transit",
        "delivered",
    ]
    assert [state for state in reached if state] == expected

    # Notified at every stage, by e-mail, in the customer's language (Spanish).
    subjects = [message["Subject"] for message in world.smtp.to(email)]
    assert len(subjects) >= len(expected) - 2, subjects
    notifications = _ok(customer.get("/api/v1/notifications"))
    assert notifications["unread"] >= len(FACTORY_STAGES)

    # Nobody else sees any of it.
    other_dealer = httpx.Client(base_url=world.platform, timeout=10)
    _ok(
        other_dealer.post(
            "/api/v1/auth/login",
            json={"email": "sales.lyon@caas.example", "password": DEMO_PASSWORD},
        )
    )
    assert other_dealer.get(f"/api/v1/sales/{sale_id}").status_code == 404
    assert other_dealer.get(invoices[0]["pdf_url"]).status_code == 404
