"""The customer's saved cards: added once the provider vouches for the token (the first one is
the default), removed softly (the newest left takes over the default), and the default card
paying the renewals, planned options and monthly use; a customer sees only their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.billing import methods
from caas.billing.models import Payment, PaymentMethod
from caas.core.clock import FixedClock
from caas.core.history import customer_timeline, subject_history
from caas.core.settings import Settings
from caas.protocol.mqtt import UsageEvent
from caas.protocol.payments import API_KEY_HEADER, CARD_SUCCEEDS
from caas.store import metering
from caas.store.models import Offer
from caas.vehicles.ingest import store_usage_events
from tests.billing.conftest import API_KEY, Buyer, PaymentSandbox, buyer, login
from tests.store.conftest import (
    Owner,
    answer,
    buy,
    delivered_owner,
    item,
    offer,
    run_all_due,
    run_relay,
    subscribed,
)
from tests.store.engine import engine_keys, signing

__all__ = ["engine_keys", "signing"]

MASTERCARD = "5555555555554444"
URL = "/api/v1/me/payment-methods"


def add(client: TestClient, token: str, key: str) -> httpx.Response:
    return client.post(URL, json={"card_token": token}, headers={"Idempotency-Key": key})


def command(client: TestClient, method: str, path: str, key: str) -> httpx.Response:
    return client.request(method, f"{URL}{path}", headers={"Idempotency-Key": key})


def saved(db: Session, customer_id: int) -> list[PaymentMethod]:
    db.expire_all()
    return list(
        db.scalars(
            select(PaymentMethod)
            .where(PaymentMethod.customer_id == customer_id)
            .order_by(PaymentMethod.id)
        )
    )


@pytest.fixture
def customer(db: Session, settings: Settings, clock: FixedClock) -> Buyer:
    return buyer(db, settings, clock)


@pytest.fixture
def client(app_client: TestClient, customer: Buyer) -> TestClient:
    login(app_client, customer.user.email)
    return app_client


def test_the_first_card_is_the_default_and_the_provider_describes_each(
    db: Session, client: TestClient, customer: Buyer, payment_sandbox: PaymentSandbox
) -> None:
    first = add(client, payment_sandbox.token(CARD_SUCCEEDS), "add-first-card")
    assert first.status_code == 201, first.text
    assert first.json() | {"id": 0, "created_at": ""} == {
        "id": 0,
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2040,
        "is_default": True,
        "created_at": "",
    }
    second = add(client, payment_sandbox.token(MASTERCARD), "add-second-card")
    assert second.status_code == 201, second.text
    assert (second.json()["brand"], second.json()["is_default"]) == ("mastercard", False)

    listed = client.get(URL).json()
    assert [(m["last4"], m["is_default"]) for m in listed] == [("4242", True), ("4444", False)]
    events = [
        entry.event
        for entry in customer_timeline(db, customer.customer.id)
        if entry.subject_type == "payment_method"
    ]
    assert events == [
        "payment_method.added",
        "payment_method.default_changed",
        "payment_method.added",
    ]
    entry = subject_history(db, "payment_method", first.json()["id"])[0]
    assert (entry.actor_kind, entry.actor_user_id) == ("customer", customer.user.id)


def test_adding_twice_with_one_key_saves_one_card(
    db: Session, client: TestClient, customer: Buyer, payment_sandbox: PaymentSandbox
) -> None:
    token = payment_sandbox.token(CARD_SUCCEEDS)
    first = add(client, token, "one-key-for-one-card")
    again = add(client, token, "one-key-for-one-card")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert len(saved(db, customer.customer.id)) == 1

    other = add(client, payment_sandbox.token(MASTERCARD), "one-key-for-one-card")
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency.key_reused"
    assert len(saved(db, customer.customer.id)) == 1

    missing = client.post(URL, json={"card_token": token})
    assert missing.status_code == 422
    assert missing.json()["field"] == "Idempotency-Key"


def test_a_token_the_provider_does_not_know_is_refused_on_card_token(
    db: Session, client: TestClient, customer: Buyer
) -> None:
    response = add(client, "tok_0000000000000000", "unknown-token-key")
    assert response.status_code == 422
    body = response.json()
    assert (body["field"], body["code"]) == ("card_token", "payment_method.invalid_card_token")
    assert saved(db, customer.customer.id) == []
    malformed = add(client, "4242424242424242", "card-number-not-token")
    assert malformed.status_code == 422
    assert saved(db, customer.customer.id) == []


def test_the_sandbox_shows_a_token_only_to_the_merchant(payment_sandbox: PaymentSandbox) -> None:
    token = payment_sandbox.token(MASTERCARD)
    url = f"{payment_sandbox.url}/v1/tokens/{token}"
    assert httpx.get(url).status_code == 401
    found = httpx.get(url, headers={API_KEY_HEADER: API_KEY})
    assert found.status_code == 200
    assert found.json()["card"]["last4"] == "4444"
    unknown = httpx.get(
        f"{payment_sandbox.url}/v1/tokens/tok_nope", headers={API_KEY_HEADER: API_KEY}
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_token")


def test_another_customers_card_is_not_found(
    db: Session,
    client: TestClient,
    customer: Buyer,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    mine = add(client, payment_sandbox.token(CARD_SUCCEEDS), "mine-first-card").json()
    stranger = buyer(db, settings, clock, "FR")
    login(client, stranger.user.email)
    assert client.get(URL).json() == []
    for method, path in (("POST", f"/{mine['id']}/default"), ("DELETE", f"/{mine['id']}")):
        response = command(client, method, path, f"stranger-{method}")
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "payment_method.not_found"
    (kept,) = saved(db, customer.customer.id)
    assert (kept.removed_at, kept.is_default) == (None, True)


def test_removing_the_default_promotes_the_newest_card_left(
    db: Session,
    client: TestClient,
    customer: Buyer,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    tokens = [payment_sandbox.token(CARD_SUCCEEDS) for _ in range(3)]
    ids = []
    for number, token in enumerate(tokens):
        ids.append(add(client, token, f"card-number-{number}").json()["id"])
        clock.advance(timedelta(minutes=1))

    removed = command(client, "DELETE", f"/{ids[0]}", "remove-the-default")
    assert removed.status_code == 200, removed.text
    assert removed.json()["is_default"] is False
    assert [(m["id"], m["is_default"]) for m in client.get(URL).json()] == [
        (ids[2], True),
        (ids[1], False),
    ]
    rows = saved(db, customer.customer.id)
    assert rows[0].removed_at == clock.now()  # kept, marked removed

    # Removing a card twice, or a removed one: 404; a removed token cannot be saved again.
    assert command(client, "DELETE", f"/{ids[0]}", "remove-it-again").status_code == 404
    assert add(client, tokens[0], "add-removed-again").status_code == 409

    assert command(client, "DELETE", f"/{ids[1]}", "remove-not-default").status_code == 200
    assert command(client, "DELETE", f"/{ids[2]}", "remove-the-last").status_code == 200
    assert client.get(URL).json() == []
    assert methods.default_method(db, customer.customer.id) is None
    # No card left: a charge set up with a removed card finds none.
    assert methods.charge_token(db, customer_id=customer.customer.id, stored=tokens[2]) is None
    assert methods.charge_token(db, customer_id=customer.customer.id, stored="tok_other") == (
        "tok_other"
    )


def test_set_default_moves_the_default(
    db: Session, client: TestClient, customer: Buyer, payment_sandbox: PaymentSandbox
) -> None:
    first = add(client, payment_sandbox.token(CARD_SUCCEEDS), "default-first").json()
    second = add(client, payment_sandbox.token(MASTERCARD), "default-second").json()
    answer = command(client, "POST", f"/{second['id']}/default", "make-second-default")
    again = command(client, "POST", f"/{second['id']}/default", "make-second-default")
    assert answer.status_code == 200, answer.text
    assert again.json() == answer.json()
    assert answer.json()["is_default"] is True
    assert [(m["id"], m["is_default"]) for m in client.get(URL).json()] == [
        (second["id"], True),
        (first["id"], False),
    ]
    changes = [
        e
        for e in subject_history(db, "payment_method", second["id"])
        if e.event.endswith("default_changed")
    ]
    assert len(changes) == 1
    assert changes[0].details["previous_id"] == first["id"]


# --- renewals on the default card -------------------------------------------------------------

# 15.00 net + 21 % Spanish VAT.
PRICE_MINOR = 1_500


@pytest.fixture
def owner(db: Session, settings: Settings, clock: FixedClock, signing: object) -> Owner:
    return delivered_owner(db, settings, clock)


@pytest.fixture
def monthly(db: Session, owner: Owner) -> Offer:
    found = offer(db, owner.vehicle, "power_boost", "subscription", "1M", net_minor=PRICE_MINOR)
    db.commit()
    return found


def _renewals(db: Session, owner: Owner) -> list[Payment]:
    return list(
        db.scalars(
            select(Payment)
            .where(Payment.customer_id == owner.customer.id, Payment.kind == "renewal")
            .order_by(Payment.id)
        )
    )


def test_a_renewal_is_charged_to_the_card_made_default(
    db: Session,
    owner: Owner,
    monthly: Offer,
    app_client: TestClient,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    bought_with = payment_sandbox.token(CARD_SUCCEEDS)
    subscription = subscribed(db, owner, monthly, token=bought_with, clock=clock)
    login(app_client, owner.user.email)
    visa = add(app_client, bought_with, "save-the-visa").json()
    mastercard = add(app_client, payment_sandbox.token(MASTERCARD), "save-the-mc").json()
    assert visa["is_default"] is True
    made = command(app_client, "POST", f"/{mastercard['id']}/default", "mc-is-default")
    assert made.status_code == 200, made.text
    db.refresh(subscription)
    moved = [
        entry
        for entry in subject_history(db, "subscription", subscription.id)
        if entry.event == "subscription.payment_method_changed"
    ]
    assert [(e.details["card"], e.actor_kind) for e in moved] == [
        ("mastercard •••• 4444", "customer")
    ]

    clock.set(subscription.current_period_end)
    run_all_due(settings, sessions, clock, db)

    (payment,) = _renewals(db, owner)
    assert (payment.state, payment.card_brand, payment.card_last4) == (
        "captured",
        "mastercard",
        "4444",
    )
    assert payment_sandbox.captures(payment.reference) == 1
    db.refresh(subscription)
    assert subscription.state == "active"


def test_a_renewal_with_no_card_left_goes_through_dunning(
    db: Session,
    owner: Owner,
    monthly: Offer,
    app_client: TestClient,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    token = payment_sandbox.token(CARD_SUCCEEDS)
    subscription = subscribed(db, owner, monthly, token=token, clock=clock)
    login(app_client, owner.user.email)
    saved_card = add(app_client, token, "save-then-remove").json()
    assert command(app_client, "DELETE", f"/{saved_card['id']}", "remove-only").status_code == 200

    end = subscription.current_period_end
    clock.set(end)
    run_all_due(settings, sessions, clock, db)

    db.refresh(subscription)
    assert (subscription.state, subscription.attempts) == ("past_due", 1)
    assert subscription.next_attempt_at == end + timedelta(days=1)
    assert _renewals(db, owner) == []  # the removed card is never charged
    (failed,) = [
        e
        for e in subject_history(db, "subscription", subscription.id)
        if e.event == "subscription.renewal_failed"
    ]
    assert failed.details["reason"] == "no_payment_method"

    # A new card saved before the retry pays it.
    add(app_client, payment_sandbox.token(MASTERCARD), "a-new-card")
    clock.set(end + timedelta(days=1))
    run_all_due(settings, sessions, clock, db)
    db.refresh(subscription)
    assert (subscription.state, subscription.attempts) == ("active", 0)
    (payment,) = _renewals(db, owner)
    assert (payment.state, payment.card_last4) == ("captured", "4444")


def test_a_planned_option_is_charged_to_the_default_card(
    db: Session,
    owner: Owner,
    app_client: TestClient,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    custom = offer(db, owner.vehicle, "power_boost", "custom", net_minor=500)
    clock.set(datetime(2026, 3, 20, 12, tzinfo=UTC))
    login(app_client, owner.user.email)
    created = app_client.post(
        f"/api/v1/vehicles/{owner.vehicle.vin}/schedules",
        json={
            "offer_id": custom.id,
            "recurrence": "weekly",
            "start_date": "2026-03-21",
            "start_time": "08:00",
            "end_date": "2026-03-22",
            "end_time": "22:00",
            "card_token": payment_sandbox.token(CARD_SUCCEEDS),
        },
        headers={"Idempotency-Key": "weekend-on-the-visa"},
    )
    assert created.status_code == 201, created.text
    # The first card saved becomes the default; the schedule follows it.
    assert add(app_client, payment_sandbox.token(MASTERCARD), "save-mc-later").status_code == 201
    moved = [
        entry.event
        for entry in subject_history(db, "schedule", created.json()["id"])
        if entry.event == "schedule.payment_method_changed"
    ]
    assert moved == ["schedule.payment_method_changed"]

    clock.set(datetime(2026, 3, 21, 7, tzinfo=UTC))
    run_all_due(settings, sessions, clock, db)

    (payment,) = db.scalars(
        select(Payment).where(
            Payment.customer_id == owner.customer.id, Payment.kind == "occurrence"
        )
    ).all()
    assert (payment.state, payment.card_brand, payment.card_last4) == (
        "captured",
        "mastercard",
        "4444",
    )


def test_the_monthly_use_is_charged_to_the_default_card(
    db: Session,
    owner: Owner,
    app_client: TestClient,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    hourly = offer(db, owner.vehicle, "power_boost", "metered", net_minor=150, unit="hour")
    purchase = buy(
        db,
        owner,
        [item(hourly)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key="pay-per-use-on-the-visa",
        settings=settings,
        clock=clock,
    )
    answer(db, owner, purchase.configuration_version or 0, "applied", clock)
    run_relay(settings, sessions, clock, db)
    metering.start_metering(db, now=clock.now())
    db.commit()
    used_at = clock.now() + timedelta(hours=1)
    store_usage_events(
        db,
        [
            UsageEvent(
                vin=owner.vehicle.vin,
                seq=1,
                at=used_at,
                feature="power_boost",
                unit="hour",
                quantity=10,
            )
        ],
        now=used_at,
    )
    db.commit()
    login(app_client, owner.user.email)
    assert add(app_client, payment_sandbox.token(MASTERCARD), "mc-for-the-month").status_code == 201

    clock.set(metering.next_month_run(clock.now()))
    run_all_due(settings, sessions, clock, db)

    (payment,) = db.scalars(
        select(Payment).where(Payment.customer_id == owner.customer.id, Payment.kind == "metered")
    ).all()
    assert (payment.state, payment.card_last4) == ("captured", "4444")
