"""The owner's options over HTTP: listed, switched off and on at will with an Idempotency-Key;
nobody else finds them."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.seed import DEMO_PASSWORD
from caas.store import entitlements
from caas.store.models import Entitlement
from tests.registration.support import login
from tests.store.engine import Delivered, delivered, engine_keys, give, signing, versions
from tests.vehicles.support import Car, born_car

__all__ = ["delivered", "engine_keys", "signing"]


def log_in(client: TestClient, db: Session, car: Car) -> None:
    user = db.get_one(User, car.customer_user_id)
    user.password_hash = hash_password(DEMO_PASSWORD)
    db.commit()
    login(client, user.email)


def test_the_owner_lists_and_switches_an_option_and_the_car_follows(
    app_client: TestClient, db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    give(db, delivered, "power_boost", now + timedelta(days=1), now + timedelta(days=8), now=now)
    log_in(app_client, db, delivered.car)
    vin = delivered.car.vin

    listed = app_client.get(f"/api/v1/vehicles/{vin}/options")
    assert listed.status_code == 200, listed.text
    options = listed.json()
    assert [(o["code"], o["source"], o["enabled"], o["switchable"]) for o in options] == [
        ("driver_assist", "plan", True, True),
        ("power_boost", "purchase", True, True),
    ]
    plan_id = options[0]["entitlement_id"]
    before = len(versions(db, delivered.vehicle))

    def switch(enabled: bool, key: str) -> dict[str, object]:
        response = app_client.put(
            f"/api/v1/vehicles/{vin}/options/{plan_id}",
            json={"enabled": enabled},
            headers={"Idempotency-Key": key},
        )
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    assert switch(False, "switch-off-0001")["enabled"] is False
    assert switch(False, "switch-off-0001")["enabled"] is False  # a retry acts once
    assert len(versions(db, delivered.vehicle)) == before + 1
    assert versions(db, delivered.vehicle)[-1].reason == "option.switched_off"
    clock.advance(timedelta(minutes=5))
    assert switch(True, "switch-on-0001")["enabled"] is True
    assert len(versions(db, delivered.vehicle)) == before + 2
    listed_again = app_client.get(f"/api/v1/vehicles/{vin}/options").json()
    assert listed_again[0]["enabled"] is True


def test_switching_needs_an_idempotency_key(
    app_client: TestClient, db: Session, delivered: Delivered
) -> None:
    log_in(app_client, db, delivered.car)
    options = app_client.get(f"/api/v1/vehicles/{delivered.car.vin}/options").json()
    response = app_client.put(
        f"/api/v1/vehicles/{delivered.car.vin}/options/{options[0]['entitlement_id']}",
        json={"enabled": False},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency.key_required"


def test_a_trial_cannot_be_switched(
    app_client: TestClient, db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    trial = give(
        db, delivered, "entertainment", now, now + timedelta(days=30), source="trial", now=now
    )
    log_in(app_client, db, delivered.car)
    response = app_client.put(
        f"/api/v1/vehicles/{delivered.car.vin}/options/{trial.id}",
        json={"enabled": False},
        headers={"Idempotency-Key": "switch-trial-01"},
    )
    assert response.status_code == 409
    assert response.json()["code"] == "entitlement.not_switchable.trial"


def test_another_customer_finds_neither_the_car_nor_its_options(
    app_client: TestClient,
    db: Session,
    delivered: Delivered,
    clock: FixedClock,
    settings: Settings,
) -> None:
    stranger = born_car(db, settings=settings, now=clock.now())
    log_in(app_client, db, stranger)
    vin = delivered.car.vin
    listed = app_client.get(f"/api/v1/vehicles/{vin}/options")
    assert (listed.status_code, listed.json()["code"]) == (404, "vehicle.not_found")
    (plan,) = entitlements.owned_options(db, delivered.vehicle, at=clock.now())
    switched = app_client.put(
        f"/api/v1/vehicles/{vin}/options/{plan.entitlement_id}",
        json={"enabled": False},
        headers={"Idempotency-Key": "switch-other-01"},
    )
    assert (switched.status_code, switched.json()["code"]) == (404, "vehicle.not_found")
    # Their own car has no such option either.
    mine = app_client.put(
        f"/api/v1/vehicles/{stranger.vin}/options/{plan.entitlement_id}",
        json={"enabled": False},
        headers={"Idempotency-Key": "switch-other-02"},
    )
    assert (mine.status_code, mine.json()["code"]) == (404, "entitlement.not_found")
    db.refresh(db.get_one(Entitlement, plan.entitlement_id))
    assert db.get_one(Entitlement, plan.entitlement_id).enabled
