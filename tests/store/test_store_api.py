"""The customer's store over HTTP: the car's store with prices and reasons, quotes, purchases
(201, 202, 402, 409, 422), reading them; owner only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.protocol.payments import CARD_DECLINED, CARD_SUCCEEDS
from caas.store.models import Purchase
from caas.store.read import store_view
from tests.billing.conftest import PaymentSandbox, login
from tests.store.conftest import Owner, answer, offer, owner_of, run_relay
from tests.store.engine import Delivered, delivered, engine_keys, signing
from tests.vehicles.support import born_car, deliver
from tests.vehicles.test_twin_api import counting_queries

__all__ = ["delivered", "engine_keys", "signing"]


@pytest.fixture
def owner(db: Session, delivered: Delivered, clock: FixedClock) -> Owner:
    return owner_of(db, delivered.car, clock.now())


@pytest.fixture
def client(app_client: TestClient, owner: Owner) -> TestClient:
    login(app_client, owner.customer.email)
    return app_client


def _buy(
    client: TestClient, owner: Owner, items: list[dict[str, Any]], token: str, key: str | None
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(
        f"/api/v1/vehicles/{owner.vehicle.vin}/purchases",
        json={"items": items, "payment_method": token},
        headers=headers,
    )


def _purchases(db: Session, owner: Owner) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(Purchase)
            .where(Purchase.customer_id == owner.customer.id)
        )
        or 0
    )


def test_the_store_lists_every_option_with_prices_with_vat_reasons_and_what_the_car_has(
    db: Session, client: TestClient, owner: Owner
) -> None:
    week = offer(db, owner.vehicle, "power_boost", "window", "7D", net_minor=1_999)
    offer(db, owner.vehicle, "entertainment", "window", "1M", net_minor=500)
    response = client.get(f"/api/v1/vehicles/{owner.vehicle.vin}/store")
    assert response.status_code == 200, response.text
    store = response.json()
    assert (store["country"], store["language"]) == ("ES", "es")
    features = {feature["code"]: feature for feature in store["features"]}
    assert {"power_boost", "driver_assist", "winter_traction", "entertainment"} <= set(features)
    boost = features["power_boost"]
    (priced,) = [o for o in boost["offers"] if o["id"] == week.id]
    assert (
        priced["price"]["net"]["amount_minor"],
        priced["price"]["vat_rate_bp"],
        priced["price"]["vat"]["amount_minor"],
        priced["price"]["gross"]["amount_minor"],
    ) == (1_999, 2100, 420, 2_419)
    assert boost["refusals"] == []
    screens = features["entertainment"]
    assert [r["reason"] for r in screens["refusals"]] == ["hardware_missing"]
    assert screens["refusals"][0]["message"] == (
        "Este coche no salió de fábrica con el hardware que necesita."
    )
    (plan,) = features["driver_assist"]["owned"]
    assert (plan["source"], plan["state"]) == ("plan", "active")

    english = client.get(
        f"/api/v1/vehicles/{owner.vehicle.vin}/store", headers={"Accept-Language": "en-GB"}
    ).json()
    names = {feature["code"]: feature["name"] for feature in english["features"]}
    assert names["winter_traction"] == "Winter traction modes"


def test_a_quote_prices_the_cart_and_writes_nothing(
    db: Session, client: TestClient, owner: Owner, clock: FixedClock
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D", net_minor=999)
    trial = offer(db, owner.vehicle, "winter_traction", "trial", "1M")
    response = client.post(
        f"/api/v1/vehicles/{owner.vehicle.vin}/store/quote",
        json={"items": [{"offer_id": boost.id}, {"offer_id": trial.id}]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [line["code"] for line in body["lines"]] == ["power_boost", "winter_traction"]
    # VAT per line: 9.99 * 21 % = 2.0979, rounded half up.
    assert (body["net"]["amount_minor"], body["vat"]["amount_minor"]) == (999, 210)
    assert body["gross"]["amount_minor"] == 1_209
    assert _purchases(db, owner) == 0


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"offer_id": 999_999}, "items.0.offer_id"),
        ({"ends_at": "2026-03-01T00:00:00Z"}, "items.0.ends_at"),
        ({"starts_at": "2026-01-01T00:00:00Z"}, "items.0.starts_at"),
        ({"starts_at": "2026-03-01T00:00:00"}, "items.0.starts_at"),  # no time zone
        ({"spending_cap_minor": 0}, "items.0.spending_cap_minor"),
    ],
)
def test_bad_input_answers_422_naming_the_field(
    db: Session, client: TestClient, owner: Owner, item: dict[str, Any], field: str
) -> None:
    week = offer(db, owner.vehicle, "power_boost", "window", "7D")
    response = client.post(
        f"/api/v1/vehicles/{owner.vehicle.vin}/store/quote",
        json={"items": [{"offer_id": week.id, **item}]},
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_a_purchase_answers_201_delivering_and_a_retry_with_its_key_the_same_purchase(
    db: Session,
    client: TestClient,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D", net_minor=999)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    first = _buy(client, owner, [{"offer_id": boost.id}], token, "api-purchase-1")
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["state"], body["status"], body["payment_state"]) == (
        "delivering",
        "Pagada, en camino a tu coche",
        "authorised",
    )
    again = _buy(client, owner, [{"offer_id": boost.id}], token, "api-purchase-1")
    assert again.status_code == 201 and again.json()["id"] == body["id"]
    assert _purchases(db, owner) == 1

    answer(db, owner, body["configuration_version"], "applied", clock)
    run_relay(settings, client.app.state.sessions, clock, db)  # type: ignore[attr-defined]
    read = client.get(f"/api/v1/purchases/{body['id']}").json()
    assert (read["state"], read["payment_state"]) == ("active", "captured")
    assert read["invoice_number"].startswith("ES-")
    assert read["lines"][0]["entitlement_state"] == "active"
    listed = client.get(f"/api/v1/vehicles/{owner.vehicle.vin}/purchases").json()
    assert [p["id"] for p in listed] == [body["id"]]


def test_a_purchase_needs_an_idempotency_key(
    db: Session, client: TestClient, owner: Owner, payment_sandbox: PaymentSandbox
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D")
    response = _buy(
        client, owner, [{"offer_id": boost.id}], payment_sandbox.token(CARD_SUCCEEDS), None
    )
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == (
        "idempotency.key_required",
        "Idempotency-Key",
    )


def test_a_declined_card_answers_402_with_the_purchase(
    db: Session, client: TestClient, owner: Owner, payment_sandbox: PaymentSandbox
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D")
    response = _buy(
        client,
        owner,
        [{"offer_id": boost.id}],
        payment_sandbox.token(CARD_DECLINED),
        "api-declined-1",
    )
    assert response.status_code == 402, response.text
    error = response.json()
    assert error["code"] == "payment.declined"
    assert error["details"]["purchase"]["state"] == "failed"


def test_an_option_the_car_cannot_get_answers_409_with_every_reason_and_writes_nothing(
    db: Session, client: TestClient, owner: Owner, payment_sandbox: PaymentSandbox
) -> None:
    screens = offer(db, owner.vehicle, "entertainment", "window", "1M")
    response = _buy(
        client,
        owner,
        [{"offer_id": screens.id}],
        payment_sandbox.token(CARD_SUCCEEDS),
        "api-refused-1",
    )
    assert response.status_code == 409, response.text
    error = response.json()
    assert (error["code"], error["field"]) == (
        "store.not_eligible.hardware_missing",
        "items.0.offer_id",
    )
    assert [r["reason"] for r in error["details"]["refusals"]] == ["hardware_missing"]
    assert _purchases(db, owner) == 0


def test_another_customers_car_and_purchases_are_404(
    db: Session,
    client: TestClient,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    boost = offer(db, owner.vehicle, "power_boost", "window", "1D")
    mine = _buy(
        client, owner, [{"offer_id": boost.id}], payment_sandbox.token(CARD_SUCCEEDS), "mine-001"
    ).json()
    other_car = born_car(db, settings=settings, now=clock.now())
    deliver(db, other_car, now=clock.now())
    other = owner_of(db, other_car, clock.now())
    login(client, other.customer.email)
    assert client.get(f"/api/v1/vehicles/{owner.vehicle.vin}/store").status_code == 404
    assert client.get(f"/api/v1/vehicles/{owner.vehicle.vin}/purchases").status_code == 404
    assert client.get(f"/api/v1/purchases/{mine['id']}").status_code == 404
    refused = _buy(
        client, owner, [{"offer_id": boost.id}], payment_sandbox.token(CARD_SUCCEEDS), "theirs-1"
    )
    assert refused.status_code == 404
    assert client.get(f"/api/v1/vehicles/{other.vehicle.vin}/store").status_code == 200


def test_a_planned_window_starts_when_the_customer_chose(
    db: Session, client: TestClient, owner: Owner, clock: FixedClock
) -> None:
    week = offer(db, owner.vehicle, "winter_traction", "window", "7D")
    start = clock.now() + timedelta(days=30)
    response = client.post(
        f"/api/v1/vehicles/{owner.vehicle.vin}/store/quote",
        json={"items": [{"offer_id": week.id, "starts_at": start.isoformat()}]},
    )
    assert response.status_code == 200, response.text
    (line,) = response.json()["lines"]
    assert line["valid_from"].startswith("2026-02-14T09:00:00")
    assert line["valid_until"].startswith("2026-02-21T09:00:00")
    assert line["extends"] is False


def test_the_store_is_read_in_a_fixed_number_of_queries(
    db: Session, owner: Owner, clock: FixedClock
) -> None:
    def count() -> int:
        with counting_queries(db) as statements:
            store_view(
                db, vehicle=owner.vehicle, customer=owner.customer, at=clock.now(), language="es"
            )
        return len(statements)

    offer(db, owner.vehicle, "power_boost", "window", "1D")
    few = count()
    for kind, duration in (("window", "7D"), ("window", "1M"), ("subscription", "1M")):
        offer(db, owner.vehicle, "winter_traction", kind, duration)
    offer(db, owner.vehicle, "power_boost", "permanent")
    assert count() == few
