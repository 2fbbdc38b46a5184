"""A car sold second-hand: what belongs to the car stays with it, what belongs to the person
leaves with them. The seller opens a transfer and gives the buyer a code; the buyer types the
VIN and the code; the car then rejects the seller's phone and opens for the buyer's."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.billing.models import Invoice, Payment
from caas.core.clock import FixedClock
from caas.core.history import customer_timeline, subject_history
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.ota.keys import SigningMaterial
from caas.ownership.models import Transfer
from caas.protocol.payments import CARD_SUCCEEDS
from caas.sales.models import Sale
from caas.store.models import Entitlement, Subscription
from caas.vehicles.models import PhoneKey, Vehicle
from tests.billing.conftest import PaymentSandbox
from tests.ownership.conftest import Person, SimulatedCar, buyer, log_in, pair
from tests.store.conftest import Owner, answer, buy, delivered_owner, item, offer, run_all_due
from tests.store.engine import engine_keys, signing

__all__ = ["engine_keys", "signing"]

SUBSCRIPTION_NET = 3_000  # EUR 30.00 a month, 21% VAT: 36.30


@pytest.fixture
def seller(db: Session, settings: Settings, clock: FixedClock, signing: SigningMaterial) -> Owner:
    owner = delivered_owner(db, settings, clock)
    db.get_one(Sale, owner.car.sale_id).state = "delivered"
    db.commit()
    return owner


@pytest.fixture
def bruno(db: Session, clock: FixedClock) -> Person:
    return buyer(db, clock.now())


def open_transfer(client: TestClient, vin: str, key: str = "sell-0001") -> dict[str, object]:
    response = client.post(f"/api/v1/vehicles/{vin}/transfer", headers={"Idempotency-Key": key})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def receive(client: TestClient, vin: str, code: str, key: str) -> object:
    return client.post(
        "/api/v1/transfers/receive",
        json={"vin": vin, "code": code},
        headers={"Idempotency-Key": key},
    )


def test_a_private_resale_moves_the_car_and_leaves_the_sellers_things_behind(
    app_client: TestClient,
    db: Session,
    seller: Owner,
    bruno: Person,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    signing: SigningMaterial,
) -> None:
    vin = seller.vehicle.vin
    car = SimulatedCar(db, seller.vehicle.id, vin, signing, clock.now)
    # The seller owns power boost for life and subscribes to winter traction, refundable by
    # the unused days; both paid and applied by the car.
    forever = offer(db, seller.vehicle, "power_boost", "permanent", net_minor=150_000)
    monthly = offer(db, seller.vehicle, "winter_traction", "subscription", "1M", net_minor=3_000)
    monthly.refund_policy = "unused_days"
    db.commit()
    purchase = buy(
        db,
        seller,
        [item(forever), item(monthly)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key="options-0001",
        settings=settings,
        clock=clock,
    )
    assert purchase.configuration_version is not None
    answer(db, seller, purchase.configuration_version, "applied", clock)
    run_all_due(settings, sessions, clock, db)
    assert set(car.apply_newest()) >= {"power_boost", "winter_traction"}
    payment = db.get_one(Payment, purchase.payment_id)
    assert payment.state == "captured"

    # The seller pairs a phone: the car opens for it.
    owner_client = log_in(app_client, seller.user.email)
    sellers_phone, sellers_key = pair(owner_client, vin, "Ana's phone", "pair-ana-1")
    car.apply_newest()
    assert car.unlock_with(sellers_phone, sellers_key) is None

    # Ten days later the seller sells the car: a code to give the buyer.
    clock.advance(timedelta(days=10))
    opened = open_transfer(owner_client, vin)
    code = str(opened["code"])
    assert len(code) == 9 and code[4] == "-"
    transfer = db.get_one(Transfer, opened["id"])
    assert transfer.code_hash is not None and code.replace("-", "") not in transfer.code_hash

    buyer_client = log_in(app_client, bruno.user.email)
    wrong = receive(buyer_client, vin, "AAAA-AAAA", "receive-0001")
    assert wrong.status_code == 422  # type: ignore[attr-defined]
    assert wrong.json()["field"] == "code"  # type: ignore[attr-defined]
    db.expire_all()
    assert db.get_one(Vehicle, seller.vehicle.id).owner_customer_id == seller.customer.id

    typed = code.lower().replace("-", " ")  # as a person types it
    done = receive(buyer_client, vin, typed, "receive-0002")
    assert done.status_code == 200, done.text  # type: ignore[attr-defined]
    assert done.json()["state"] == "completed"  # type: ignore[attr-defined]
    again = receive(buyer_client, vin, typed, "receive-0002")  # a retry: the same answer
    assert again.json() == done.json()  # type: ignore[attr-defined]
    db.expire_all()
    vehicle = db.get_one(Vehicle, seller.vehicle.id)
    assert vehicle.owner_customer_id == bruno.customer.id
    assert vehicle.owner_since == clock.now()

    # What belongs to the car stays: the permanent option is the buyer's, and on.
    (permanent,) = db.scalars(
        select(Entitlement).where(
            Entitlement.vehicle_id == vehicle.id, Entitlement.source == "permanent"
        )
    )
    assert (permanent.state, permanent.customer_id) == ("active", bruno.customer.id)
    running = car.apply_newest()
    assert "power_boost" in running and "winter_traction" not in running
    assert "driver_assist" in running  # the plan's option stays with the car too

    # What belongs to the seller leaves: the subscription ends, refunded by the unused days
    # (21 of 31), with a credit note in the seller's name.
    subscription = db.scalars(
        select(Subscription).where(Subscription.vehicle_id == vehicle.id)
    ).one()
    assert subscription.state == "cancelled"
    run_all_due(settings, sessions, clock, db)
    payment = db.get_one(Payment, purchase.payment_id)
    gross = 3_630
    expected = gross * 21 // 31
    assert payment.refunded_minor == expected
    credit_notes = db.scalars(
        select(Invoice).where(
            Invoice.customer_id == seller.customer.id, Invoice.kind == "credit_note"
        )
    ).all()
    assert len(credit_notes) == 1
    assert credit_notes[0].gross_minor == -expected

    # The car rejects the seller's phone, and opens for the buyer's once paired.
    assert car.agent.phone_keys == []  # the manifest carries none of the seller's keys
    assert car.unlock_with(sellers_phone, sellers_key) == "not_paired"
    assert all(key.revoked_at is not None for key in db.scalars(select(PhoneKey)).all()
               if key.vehicle_id == vehicle.id)  # fmt: skip
    buyers_phone, buyers_key = pair(buyer_client, vin, "Bruno's phone", "pair-bruno-1")
    car.apply_newest()
    assert car.unlock_with(buyers_phone, buyers_key) is None
    assert [key.label for key in car.agent.phone_keys] == ["Bruno's phone"]
    assert car.unlock_with(sellers_phone, sellers_key) == "key_not_authorised"

    # The buyer sees the car's own history, none of the seller's phones or names; the seller's
    # file and invoices are not theirs to see.
    twin = buyer_client.get(f"/api/v1/vehicles/{vin}/twin").json()
    events = [event["event"] for event in twin["history"]]
    assert "car.born" in events and "car.received" in events
    assert not [e for e in twin["history"] if e["event"].startswith("phone.") and
                e["at"] < vehicle.owner_since.isoformat().replace("+00:00", "Z")]  # fmt: skip
    assert "Ana's phone" not in str(twin)
    assert buyer_client.get(f"/api/v1/customers/{seller.customer.id}/file").status_code == 404
    assert buyer_client.get(f"/api/v1/invoices/{credit_notes[0].id}").status_code == 404
    buyers_file = buyer_client.get("/api/v1/me/file").json()
    assert [car["vin"] for car in buyers_file["maintenance"]] == [vin]
    assert buyers_file["invoices"] == []

    # The seller no longer finds the car, its twin or its store; their file keeps invoices
    # and history up to the sale, without the car's live data.
    seller_client = log_in(app_client, seller.user.email)
    for path in ("twin", "store", "phones", "transfer"):
        assert seller_client.get(f"/api/v1/vehicles/{vin}/{path}").status_code == 404, path
    sellers_file = seller_client.get("/api/v1/me/file").json()
    assert {i["kind"] for i in sellers_file["invoices"]} >= {"credit_note"}
    assert sellers_file["maintenance"] == []
    sellers_events = [entry.event for entry in customer_timeline(db, seller.customer.id)]
    assert "car.sold" in sellers_events and "car.received" not in sellers_events
    last_of_seller = max(entry.at for entry in customer_timeline(db, seller.customer.id))
    pairing = next(e for e in customer_timeline(db, bruno.customer.id) if e.event == "phone.paired")
    assert last_of_seller <= pairing.at

    # Both were told; every step is in the car's history with its actor.
    told = {
        (n.user_id, n.kind)
        for n in db.scalars(select(Notification).where(Notification.kind.like("ownership.%")))
    }
    assert told >= {
        (seller.user.id, "ownership.car_sold"),
        (bruno.user.id, "ownership.car_received"),
    }
    history = {
        (entry.event, entry.actor_label)
        for entry in subject_history(db, "vehicle", vehicle.id)
        if entry.event.startswith(("ownership.", "car.sold", "car.received"))
    }
    assert ("ownership.transfer_opened", seller.user.email) in history
    assert ("ownership.transfer_completed", bruno.user.email) in history
    assert ("car.sold", bruno.user.email) in history


def test_a_wrong_or_expired_code_is_refused_and_a_cancelled_one_stops_working(
    app_client: TestClient,
    db: Session,
    seller: Owner,
    bruno: Person,
    clock: FixedClock,
) -> None:
    vin = seller.vehicle.vin
    code = str(open_transfer(log_in(app_client, seller.user.email), vin)["code"])
    buyer_client = log_in(app_client, bruno.user.email)
    wrong = receive(buyer_client, vin, "ZZZZ-ZZZZ", "wrong-0001")
    assert wrong.status_code == 422  # type: ignore[attr-defined]
    assert wrong.json()["code"] == "transfer.code_invalid"  # type: ignore[attr-defined]
    clock.advance(timedelta(days=7))
    expired = receive(buyer_client, vin, code, "late-0001")
    assert expired.status_code == 422  # type: ignore[attr-defined]
    assert expired.json()["code"] == "transfer.code_expired"  # type: ignore[attr-defined]
    db.expire_all()
    assert db.get_one(Vehicle, seller.vehicle.id).owner_customer_id == seller.customer.id

    # The seller cancels and opens again: the old code stops working, the fresh one works.
    seller_client = log_in(app_client, seller.user.email)
    cancelled = seller_client.delete(
        f"/api/v1/vehicles/{vin}/transfer", headers={"Idempotency-Key": "cancel-0001"}
    )
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    fresh = str(open_transfer(seller_client, vin, "sell-0002")["code"])
    buyer_client = log_in(app_client, bruno.user.email)
    assert receive(buyer_client, vin, code, "old-0001").status_code == 422  # type: ignore[attr-defined]
    assert receive(buyer_client, vin, fresh, "new-0001").status_code == 200  # type: ignore[attr-defined]


def test_only_the_owner_sells_and_a_stranger_finds_no_car(
    app_client: TestClient, seller: Owner, bruno: Person
) -> None:
    vin = seller.vehicle.vin
    stranger = log_in(app_client, bruno.user.email)
    refused = stranger.post(
        f"/api/v1/vehicles/{vin}/transfer", headers={"Idempotency-Key": "x" * 8}
    )
    assert refused.status_code == 404
    assert stranger.get(f"/api/v1/vehicles/{vin}/transfer").status_code == 404
    owner = log_in(app_client, seller.user.email)
    assert owner.post(f"/api/v1/vehicles/{vin}/transfer").status_code == 422  # no key
    open_transfer(owner, vin)
    second = owner.post(f"/api/v1/vehicles/{vin}/transfer", headers={"Idempotency-Key": "y" * 8})
    assert second.status_code == 409
    retried = owner.post(
        f"/api/v1/vehicles/{vin}/transfer", headers={"Idempotency-Key": "sell-0001"}
    )
    assert retried.status_code == 201 and retried.json()["code"] is None


def test_a_new_person_receives_the_car_and_activates_their_account_by_email(
    app_client: TestClient,
    db: Session,
    seller: Owner,
    clock: FixedClock,
    smtp: object,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    from tests.factories import customer_payload
    from tests.vehicles.support import fresh_dni

    vin = seller.vehicle.vin
    code = str(open_transfer(log_in(app_client, seller.user.email), vin)["code"])
    app_client.cookies.clear()
    identity = customer_payload("ES", national_id=fresh_dni(), email="carla.new@example.es")
    response = app_client.post(
        "/api/v1/transfers/receive-new",
        json={"vin": vin, "code": code, "buyer": identity},
        headers={"Idempotency-Key": "new-owner-0001"},
    )
    assert response.status_code == 201, response.text
    db.expire_all()
    vehicle = db.get_one(Vehicle, seller.vehicle.id)
    assert vehicle.owner_customer_id != seller.customer.id
    run_all_due(settings, sessions, clock, db)
    subjects = [m["Subject"] for m in smtp.to("carla.new@example.es")]  # type: ignore[attr-defined]
    assert len(subjects) >= 2  # the activation link and the welcome with the car
    # Someone who already has an account logs in instead.
    seller_identity = {**identity, "email": seller.customer.email}
    again = app_client.post(
        "/api/v1/transfers/receive-new",
        json={"vin": vin, "code": code, "buyer": seller_identity},
        headers={"Idempotency-Key": "new-owner-0002"},
    )
    assert again.status_code == 422  # the transfer is done: the code works no more
