"""Wrong transfer codes are limited like logins: each failure is kept in its own transaction
(the request that failed rolls back), so this test runs over a database whose commits are
real."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.sales.models import Sale
from caas.seed import DEMO_PASSWORD
from caas.vehicles.models import Vehicle
from tests.ownership.conftest import buyer, log_in
from tests.vehicles.support import CommittedDatabase, born_car, committed, deliver, signing

__all__ = ["committed", "signing"]


def test_after_five_wrong_codes_even_the_right_one_waits(
    committed: CommittedDatabase, settings: Settings, signing: SigningMaterial
) -> None:
    clock = FixedClock()

    def a_car_and_a_buyer(session: Session) -> tuple[str, int, int, str, str]:
        car = born_car(session, settings=settings, now=clock.now())
        deliver(session, car, now=clock.now())
        session.get_one(Sale, car.sale_id).state = "delivered"
        owner = session.get_one(User, car.customer_user_id)
        owner.password_hash = hash_password(DEMO_PASSWORD)
        owner.activated_at = clock.now()
        email = f"buyer-{uuid.uuid4().hex[:8]}@example.es"
        buyer(session, clock.now(), email=email)
        return car.vin, car.vehicle_id, car.customer_id, owner.email, email

    vin, vehicle_id, seller_id, seller_email, buyer_email = committed.run(a_car_and_a_buyer)
    app = create_app(settings=settings, sessions=committed.sessions, clock=clock)
    with TestClient(app) as client:
        opened = log_in(client, seller_email).post(
            f"/api/v1/vehicles/{vin}/transfer", headers={"Idempotency-Key": "sell-0001"}
        )
        code = opened.json()["code"]
        log_in(client, buyer_email)
        for attempt in range(5):
            wrong = client.post(
                "/api/v1/transfers/receive",
                json={"vin": vin, "code": f"ZZZZ-ZZZ{attempt}"},
                headers={"Idempotency-Key": f"wrong-{attempt:04d}"},
            )
            assert wrong.status_code == 422
        right = {"vin": vin, "code": code}
        limited = client.post(
            "/api/v1/transfers/receive", json=right, headers={"Idempotency-Key": "right-0001"}
        )
        assert limited.status_code == 429
        assert limited.json()["code"] == "transfer.rate_limited"
        owner = committed.run(lambda s: s.get_one(Vehicle, vehicle_id).owner_customer_id)
        assert owner == seller_id

        clock.advance(timedelta(minutes=16))
        received = client.post(
            "/api/v1/transfers/receive", json=right, headers={"Idempotency-Key": "right-0002"}
        )
        assert received.status_code == 200, received.text
        assert received.json()["state"] == "completed"
