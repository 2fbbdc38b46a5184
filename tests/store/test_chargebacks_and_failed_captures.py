"""Money that does not stay with the maker takes the option away: a chargeback of a purchase's,
a renewal's or an occurrence's payment, and a capture the provider refuses after the car
applied the option, end what it paid for and re-sign the car without it."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.billing import ledger
from caas.billing.models import Payment
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.ota.models import ConfigurationVersion
from caas.protocol.mqtt import ManifestBody
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store.models import Entitlement, Purchase, Subscription
from tests.billing.conftest import PaymentSandbox, login
from tests.billing.conftest import deliver as deliver_event
from tests.store.conftest import (
    Owner,
    answer,
    buy,
    item,
    offer,
    owner_of,
    run_all_due,
    run_relay,
    subscribed,
)
from tests.store.engine import Delivered, delivered, engine_keys, signing
from tests.store.test_metering import _on as power_boost_on

__all__ = ["delivered", "engine_keys", "signing"]


@pytest.fixture
def owner(db: Session, delivered: Delivered, clock: FixedClock) -> Owner:
    return owner_of(db, delivered.car, clock.now())


def _newest(db: Session, owner: Owner) -> ConfigurationVersion:
    found = db.scalars(
        select(ConfigurationVersion)
        .where(ConfigurationVersion.vehicle_id == owner.vehicle.id)
        .order_by(ConfigurationVersion.version.desc())
    ).first()
    assert found is not None
    return found


def _on(version: ConfigurationVersion) -> set[str]:
    body = ManifestBody.model_validate(version.body)
    return {state.code for state in body.features if state.enabled}


def _rights(db: Session, purchase: Purchase) -> list[str]:
    db.expire_all()
    return list(db.scalars(select(Entitlement.state).where(Entitlement.purchase_id == purchase.id)))


def _bought_and_applied(
    db: Session,
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    key: str,
) -> Purchase:
    month = offer(db, owner.vehicle, "winter_traction", "window", "1M", net_minor=1_000)
    purchase = buy(
        db,
        owner,
        [item(month)],
        token=payment_sandbox.token(CARD_SUCCEEDS),
        key=key,
        settings=settings,
        clock=clock,
    )
    clock.advance(timedelta(seconds=2))
    answer(db, owner, purchase.configuration_version or 0, "applied", clock)
    return purchase


def test_a_chargeback_of_a_purchase_ends_the_option_and_re_signs_the_car(
    app_client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    purchase = _bought_and_applied(db, owner, settings, clock, payment_sandbox, "cb-buy-1")
    run_relay(settings, sessions, clock, db)
    purchase = db.get_one(Purchase, purchase.id)
    payment = db.get_one(Payment, purchase.payment_id)
    assert (purchase.state, payment.state) == ("active", "captured")
    applied = _newest(db, owner)
    assert "winter_traction" in _on(applied)

    assert payment.provider_ref is not None
    taken = httpx.post(
        f"{payment_sandbox.url}/sim/authorizations/{payment.provider_ref}/chargeback",
        json={"reason": "product_not_received"},
    )
    assert taken.status_code == 201, taken.text
    event = payment_sandbox.inbox.wait_for(payment.reference, "chargeback.created")
    assert deliver_event(app_client, event)["state"] == "charged_back"
    assert deliver_event(app_client, event)["state"] == "charged_back"

    db.expire_all()
    purchase = db.get_one(Purchase, purchase.id)
    assert (purchase.state, purchase.failure_code) == ("refunded", "charged_back")
    assert _rights(db, purchase) == ["revoked"]
    resigned = _newest(db, owner)
    assert resigned.version == applied.version + 1
    assert "winter_traction" not in _on(resigned)
    assert ledger.balances(db, customer_id=owner.customer.id)[ledger.CHARGEBACKS] == 1_210
    kinds = db.scalars(select(Notification.kind).where(Notification.user_id == owner.user.id)).all()
    assert kinds.count("payment.charged_back") == 1
    assert "store.purchase_refunded" not in kinds  # told once, as a chargeback


def test_a_capture_refused_after_the_car_applied_refunds_the_purchase_and_re_signs_the_car(
    db: Session,
    sessions: sessionmaker[Session],
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    purchase = _bought_and_applied(db, owner, settings, clock, payment_sandbox, "capfail-1")
    payment = db.get_one(Payment, purchase.payment_id)
    assert payment.provider_ref is not None
    applied = _newest(db, owner)
    assert "winter_traction" in _on(applied)
    # The hold is gone at the provider before the capture runs (it expired, the bank released
    # it): the provider refuses the capture.
    with SandboxProvider.from_settings(settings) as provider:
        assert provider.void(payment.provider_ref, "released-by-the-bank").status == "voided"

    run_relay(settings, sessions, clock, db)
    payment = db.get_one(Payment, payment.id)
    assert (payment.state, payment.failure_code) == ("failed", "invalid_state")
    assert payment_sandbox.captures(payment.reference) == 0
    purchase = db.get_one(Purchase, purchase.id)
    assert (purchase.state, purchase.failure_code) == ("refunded", "capture_failed")
    assert _rights(db, purchase) == ["revoked"]
    resigned = _newest(db, owner)
    assert resigned.version > applied.version
    assert "winter_traction" not in _on(resigned)
    assert ledger.customer_balance(db, owner.customer.id) == 0
    kinds = db.scalars(select(Notification.kind).where(Notification.user_id == owner.user.id)).all()
    assert "store.purchase_refunded" in kinds
    assert "store.purchase_active" not in kinds


def test_a_chargeback_of_a_renewal_revokes_the_renewed_period_and_stops_the_subscription(
    app_client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    monthly = offer(db, owner.vehicle, "power_boost", "subscription", "1M", net_minor=1_500)
    subscription = subscribed(
        db, owner, monthly, token=payment_sandbox.token(CARD_SUCCEEDS), clock=clock
    )
    clock.set(subscription.current_period_end)
    run_all_due(settings, sessions, clock, db)
    (renewal,) = db.scalars(
        select(Payment).where(Payment.customer_id == owner.customer.id, Payment.kind == "renewal")
    ).all()
    assert renewal.state == "captured" and renewal.provider_ref is not None
    renewed = _newest(db, owner)
    assert power_boost_on(renewed, clock.now() + timedelta(days=1))

    taken = httpx.post(
        f"{payment_sandbox.url}/sim/authorizations/{renewal.provider_ref}/chargeback", json={}
    )
    assert taken.status_code == 201, taken.text
    event = payment_sandbox.inbox.wait_for(renewal.reference, "chargeback.created")
    assert deliver_event(app_client, event)["state"] == "charged_back"

    db.expire_all()
    assert db.get_one(Subscription, subscription.id).state == "cancelled"
    periods = db.scalars(
        select(Entitlement.state)
        .where(Entitlement.subscription_id == subscription.id)
        .order_by(Entitlement.valid_from)
    ).all()
    assert periods[-1] == "revoked"
    resigned = _newest(db, owner)
    assert resigned.version > renewed.version
    assert not power_boost_on(resigned, clock.now() + timedelta(days=1))


def test_a_chargeback_of_an_occurrence_revokes_its_window_and_re_signs_the_car(
    app_client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    owner: Owner,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    from tests.store.test_schedules import _create, _occurrence_payments, at

    custom = offer(db, owner.vehicle, "power_boost", "custom", net_minor=500)
    clock.set(at("2026-11-20T12:00"))
    login(app_client, owner.user.email)
    body = {
        "offer_id": custom.id,
        "recurrence": "once",
        "start_date": "2026-12-01",
        "start_time": "00:00",
        "end_date": "2026-12-03",
        "end_time": "24:00",
        "charge": "upfront",
        "card_token": payment_sandbox.token(CARD_SUCCEEDS),
    }
    assert _create(app_client, owner.vehicle.vin, body, "cb-occurrence-1").status_code == 201
    run_all_due(settings, sessions, clock, db)
    clock.set(at("2026-11-30T23:00"))
    run_all_due(settings, sessions, clock, db)
    (payment,) = _occurrence_payments(db, owner)
    (window,) = db.scalars(
        select(Entitlement).where(
            Entitlement.vehicle_id == owner.vehicle.id, Entitlement.source == "occurrence"
        )
    ).all()
    assert (payment.state, window.state) == ("captured", "active")
    started = _newest(db, owner)

    assert payment.provider_ref is not None
    taken = httpx.post(
        f"{payment_sandbox.url}/sim/authorizations/{payment.provider_ref}/chargeback", json={}
    )
    assert taken.status_code == 201, taken.text
    event = payment_sandbox.inbox.wait_for(payment.reference, "chargeback.created")
    assert deliver_event(app_client, event)["state"] == "charged_back"

    db.expire_all()
    assert db.get_one(Entitlement, window.id).state == "revoked"
    resigned = _newest(db, owner)
    assert resigned.version > started.version
    assert window.code not in _on(resigned)
