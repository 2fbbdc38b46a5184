"""Wrong transfer codes are limited like logins: each failure is kept in its own transaction
(the request that failed rolls back) and logged, and the refusal says how long to wait, so
these tests run over a database whose commits are real."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.ownership import rules
from caas.sales.models import Sale
from caas.seed import DEMO_PASSWORD
from caas.vehicles.models import Vehicle
from tests.ownership.conftest import buyer, log_in
from tests.security.conftest import JsonLogs, json_logs
from tests.vehicles.support import CommittedDatabase, born_car, committed, deliver, signing

__all__ = ["committed", "json_logs", "signing"]

WINDOW_SECONDS = int(rules.FAILED_CODES_WINDOW.total_seconds())


@dataclass
class OnSale:
    """A delivered car on sale: its code given to a buyer who is logged in on `client`."""

    client: TestClient
    clock: FixedClock
    vin: str
    code: str
    vehicle_id: int
    seller_id: int
    buyer_user_id: int

    def receive(self, code: str, key: str) -> httpx.Response:
        return self.client.post(
            "/api/v1/transfers/receive",
            json={"vin": self.vin, "code": code},
            headers={"Idempotency-Key": key},
        )


@pytest.fixture
def on_sale(
    committed: CommittedDatabase, settings: Settings, signing: SigningMaterial
) -> Iterator[OnSale]:
    clock = FixedClock()

    def a_car_and_a_buyer(session: Session) -> tuple[str, int, int, str, str, int]:
        car = born_car(session, settings=settings, now=clock.now())
        deliver(session, car, now=clock.now())
        session.get_one(Sale, car.sale_id).state = "delivered"
        owner = session.get_one(User, car.customer_user_id)
        owner.password_hash = hash_password(DEMO_PASSWORD)
        owner.activated_at = clock.now()
        email = f"buyer-{uuid.uuid4().hex[:8]}@example.es"
        person = buyer(session, clock.now(), email=email)
        return car.vin, car.vehicle_id, car.customer_id, owner.email, email, person.user.id

    vin, vehicle_id, seller_id, seller_email, buyer_email, buyer_id = committed.run(
        a_car_and_a_buyer
    )
    app = create_app(settings=settings, sessions=committed.sessions, clock=clock)
    with TestClient(app) as client:
        opened = log_in(client, seller_email).post(
            f"/api/v1/vehicles/{vin}/transfer", headers={"Idempotency-Key": "sell-0001"}
        )
        assert opened.status_code == 201, opened.text
        log_in(client, buyer_email)
        yield OnSale(client, clock, vin, opened.json()["code"], vehicle_id, seller_id, buyer_id)


def test_after_five_wrong_codes_even_the_right_one_waits(
    on_sale: OnSale, committed: CommittedDatabase
) -> None:
    for attempt in range(rules.MAX_FAILED_CODES):
        wrong = on_sale.client.post(
            "/api/v1/transfers/receive",
            json={"vin": on_sale.vin, "code": f"ZZZZ-ZZZ{attempt}"},
            headers={"Idempotency-Key": f"wrong-{attempt:04d}"},
        )
        assert wrong.status_code == 422
    right = {"vin": on_sale.vin, "code": on_sale.code}
    limited = on_sale.client.post(
        "/api/v1/transfers/receive", json=right, headers={"Idempotency-Key": "right-0001"}
    )
    assert limited.status_code == 429
    assert limited.json()["code"] == "transfer.rate_limited"
    owner = committed.run(lambda s: s.get_one(Vehicle, on_sale.vehicle_id).owner_customer_id)
    assert owner == on_sale.seller_id

    on_sale.clock.advance(timedelta(minutes=16))
    received = on_sale.client.post(
        "/api/v1/transfers/receive", json=right, headers={"Idempotency-Key": "right-0002"}
    )
    assert received.status_code == 200, received.text
    assert received.json()["state"] == "completed"


def test_the_refusal_says_when_the_oldest_wrong_code_leaves_the_window(
    on_sale: OnSale, json_logs: JsonLogs
) -> None:
    tried = [f"ZZZZ-ZZ{attempt:02d}" for attempt in range(rules.MAX_FAILED_CODES)]
    for attempt, code in enumerate(tried):
        assert on_sale.receive(code, f"wrong-{attempt:04d}").status_code == 422
        on_sale.clock.advance(timedelta(minutes=1))

    # Five minutes after the first wrong code, it leaves the window in ten.
    limited = on_sale.receive(on_sale.code, "right-0001")
    assert limited.status_code == 429
    assert limited.json()["details"] == {"retry_after_seconds": WINDOW_SECONDS - 5 * 60}
    assert limited.headers["Retry-After"] == str(WINDOW_SECONDS - 5 * 60)
    assert "10 minutes" in limited.json()["message"]

    on_sale.clock.advance(timedelta(seconds=WINDOW_SECONDS - 5 * 60 - 1))
    still = on_sale.receive(on_sale.code, "right-0002")
    assert still.headers["Retry-After"] == "1"
    on_sale.clock.advance(timedelta(seconds=1))
    received = on_sale.receive(on_sale.code, "right-0003")
    assert received.status_code == 200, received.text

    # One line per wrong code, naming the car and the buyer, never the code tried.
    failures = json_logs.events("transfer.code_failed")
    assert [(line["vin"], line["user_id"]) for line in failures] == [
        (on_sale.vin, on_sale.buyer_user_id)
    ] * rules.MAX_FAILED_CODES
    assert {line["reason"] for line in failures} == {"wrong_code"}
    assert len(json_logs.events("transfer.throttled")) == 2
    logged = json_logs.text()
    assert not [code for code in [*tried, on_sale.code] if code in logged]
