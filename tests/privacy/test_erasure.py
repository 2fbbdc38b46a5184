"""The customer erases their account: refused while they own a car (or have something open),
confirmed with their password; afterwards their personal data are gone, their old login
fails, and the invoices remain, marked as retained by law."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.accounts.models import ApiToken, User
from caas.billing.models import Invoice
from caas.core.clock import FixedClock
from caas.core.history import Actor, HistoryEntry, record
from caas.core.idempotency import IdempotencyRecord
from caas.notifications.models import Notification
from caas.privacy import service as privacy
from caas.privacy.models import Erasure
from caas.privacy.rules import RETENTION_NOTE
from caas.sales.models import Customer
from caas.seed import DEMO_PASSWORD
from caas.vehicles import ingest
from caas.vehicles.models import TelemetrySample, Vehicle
from tests.privacy.conftest import invoice_for
from tests.registration.support import login
from tests.vehicles.cars import Fleet, consent, telemetry
from tests.web.support import log_in, submit

ERASE = "/api/v1/me/erasure"


def _erase(client: TestClient, password: str = DEMO_PASSWORD, key: str = "erase-me-please"):  # type: ignore[no-untyped-def]
    return client.post(ERASE, json={"password": password}, headers={"Idempotency-Key": key})


def _sell_car(db: Session, seller: Fleet, buyer: Fleet, clock: FixedClock) -> None:
    """The seller's car passes to the buyer (set-up: the change of owner is another domain's)."""
    vehicle = db.get_one(Vehicle, seller.order.vehicle_id)
    vehicle.owner_customer_id = buyer.customer_id
    record(
        db,
        at=clock.now(),
        actor=Actor.system("test"),
        subject_type="vehicle",
        subject_id=vehicle.id,
        customer_id=buyer.customer_id,
        event="car.owner_changed",
    )
    db.commit()


def _samples(db: Session, vin: str) -> list[int]:
    query = select(TelemetrySample.seq).where(TelemetrySample.vin == vin)
    return sorted(db.scalars(query))


def test_erasure_is_refused_while_the_customer_owns_a_car(
    app_client: TestClient, db: Session, owner: Fleet
) -> None:
    login(app_client, owner.order.customer_email)
    refused = _erase(app_client)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "erasure.owns_car"
    assert owner.order.vin in refused.json()["message"]
    assert "sell or transfer" in refused.json()["message"]
    db.expire_all()
    assert db.scalar(select(func.count(Erasure.id))) == 0
    assert db.get_one(Customer, owner.customer_id).email == owner.order.customer_email
    login(app_client, owner.order.customer_email)  # still works


def test_erasure_needs_the_right_password_and_a_key(
    app_client: TestClient, db: Session, owner: Fleet, other: Fleet, clock: FixedClock
) -> None:
    _sell_car(db, owner, other, clock)
    login(app_client, owner.order.customer_email)
    wrong = _erase(app_client, password="not-my-password")
    assert wrong.status_code == 403, wrong.text
    assert wrong.json()["code"] == "erasure.wrong_password"
    keyless = app_client.post(ERASE, json={"password": DEMO_PASSWORD})
    assert keyless.status_code == 422
    db.expire_all()
    assert db.get_one(User, owner.order.customer_user_id).is_active


def test_after_erasure_the_login_fails_and_the_invoices_remain_marked(
    app_client: TestClient, db: Session, owner: Fleet, other: Fleet, clock: FixedClock
) -> None:
    invoice = invoice_for(db, owner, clock)
    consent(db, owner.customer_id, clock.now(), location_history=True, tailored_offers=True)
    vin = owner.order.vin
    ingest.store_telemetry(db, [telemetry(vin, 1, clock.now())], now=clock.now())
    db.add(
        Notification(
            user_id=owner.order.customer_user_id,
            kind="order.delivered",
            title="Delivered",
            body="Your car is here",
            context={},
            dedupe_key="privacy-test-note",
            created_at=clock.now(),
        )
    )
    db.commit()
    clock.advance(timedelta(days=30))
    _sell_car(db, owner, other, clock)
    clock.advance(timedelta(minutes=1))
    ingest.store_telemetry(db, [telemetry(vin, 2, clock.now())], now=clock.now())  # the buyer's
    db.commit()

    token = app_client.post(
        "/api/v1/auth/tokens",
        json={"email": owner.order.customer_email, "password": DEMO_PASSWORD, "name": "phone"},
    ).json()["token"]
    login(app_client, owner.order.customer_email)
    corrected = app_client.patch(
        "/api/v1/me/profile", json={"city": "Cuenca"}, headers={"Idempotency-Key": "move-city"}
    )
    assert corrected.status_code == 200, corrected.text
    erased = _erase(app_client)
    assert erased.status_code == 201, erased.text
    assert erased.json()["retained"] == RETENTION_NOTE
    assert erased.json()["invoices"] == [invoice.number]
    # The old login, the web session (a retry included) and the API token all fail.
    assert _erase(app_client).status_code == 401
    gone = app_client.post(
        "/api/v1/auth/login", json={"email": owner.order.customer_email, "password": DEMO_PASSWORD}
    )
    assert gone.status_code == 401
    assert app_client.get("/api/v1/me/consents").status_code == 401
    bearer = app_client.get("/api/v1/me/consents", headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 401

    db.expire_all()
    customer = db.get_one(Customer, owner.customer_id)
    assert owner.order.customer_email not in (customer.email, customer.first_name)
    assert customer.national_id == f"ERASED-{customer.id}"
    assert (customer.phone, customer.street, customer.city) == ("", "", "")
    user = db.get_one(User, owner.order.customer_user_id)
    assert (user.password_hash, user.is_active) == (None, False)
    assert db.scalar(select(func.count(ApiToken.id)).where(ApiToken.user_id == user.id)) == 0
    assert (
        db.scalar(select(func.count(Notification.id)).where(Notification.user_id == user.id)) == 0
    )
    assert {c.purpose: c.granted for c in privacy.consents_of(db, customer.id)} == {
        "service": True,
        "location_history": False,
        "driving_style": False,
        "product_improvement": False,
        "tailored_offers": False,
    }
    # Their telemetry is gone; what the car sent for its new owner stays.
    assert _samples(db, vin) == [2]
    # The invoice stays, unchanged, and the erasure says why.
    kept = db.get_one(Invoice, invoice.id)
    assert (kept.number, kept.gross_minor) == (invoice.number, invoice.gross_minor)
    mark = db.scalars(select(Erasure).where(Erasure.customer_id == customer.id)).one()
    assert mark.retained == {
        "reason": RETENTION_NOTE,
        "invoices": [invoice.number],
        "ledger_entries": 0,
    }
    # The history keeps its events; the person is no longer named as their actor.
    events = list(db.scalars(select(HistoryEntry).where(HistoryEntry.customer_id == customer.id)))
    assert {"consent.granted", "consent.withdrawn", "account.erased"} <= {e.event for e in events}
    assert not db.scalar(
        select(func.count(HistoryEntry.id)).where(
            HistoryEntry.actor_label == owner.order.customer_email
        )
    )
    (correction,) = [e for e in events if e.event == "profile.corrected"]
    assert correction.details == {"fields": ["city"]}
    answers = select(IdempotencyRecord.operation).where(
        IdempotencyRecord.principal == f"user:{user.id}"
    )
    assert list(db.scalars(answers)) == ["account.erase"]
    # The other customer is untouched.
    assert db.get_one(Customer, other.customer_id).email == other.order.customer_email


def test_erasure_from_the_portal_ends_the_session(
    app_client: TestClient, db: Session, owner: Fleet, other: Fleet, clock: FixedClock
) -> None:
    _sell_car(db, owner, other, clock)
    log_in(app_client, owner.order.customer_email)
    page = "/portal/privacy"
    wrong = submit(app_client, page, "/portal/privacy/erase", {"password": "nope-nope-nope"})
    assert wrong.status_code == 403
    done = submit(app_client, page, "/portal/privacy/erase", {"password": DEMO_PASSWORD})
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/login"
    assert app_client.get(page, follow_redirects=False).status_code in (302, 303)
    refused = submit(
        app_client,
        "/login",
        "/login",
        {"email": owner.order.customer_email, "password": DEMO_PASSWORD},
    )
    assert refused.status_code != 303


def test_a_second_hand_cars_data_is_erased_only_for_the_time_it_was_theirs(
    app_client: TestClient, db: Session, owner: Fleet, other: Fleet, clock: FixedClock
) -> None:
    """The other customer's car was the owner's for a while, then went back: only what it
    sent in between goes with the owner's erasure."""
    vin = other.order.vin
    _sell_car(db, owner, other, clock)  # the owner's own car goes first
    ingest.store_telemetry(db, [telemetry(vin, 1, clock.now())], now=clock.now())
    clock.advance(timedelta(days=1))
    _sell_car(db, other, owner, clock)
    clock.advance(timedelta(hours=1))
    ingest.store_telemetry(db, [telemetry(vin, 2, clock.now())], now=clock.now())
    clock.advance(timedelta(days=1))
    _sell_car(db, other, other, clock)  # back to its first owner
    clock.advance(timedelta(hours=1))
    ingest.store_telemetry(db, [telemetry(vin, 3, clock.now())], now=clock.now())
    db.commit()

    login(app_client, owner.order.customer_email)
    assert _erase(app_client).status_code == 201
    db.expire_all()
    assert _samples(db, vin) == [1, 3]
