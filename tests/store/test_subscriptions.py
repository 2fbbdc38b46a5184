"""Subscriptions over time: renewed at the period's end (charged once, the car gets the next
period), a failed renewal retried on schedule with the customer told, then lapsed; cancelled
at the period's end and resumed; not renewed while the car is off its maintenance plan."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.billing.models import Payment
from caas.billing.provider import SandboxProvider
from caas.catalog.models import Feature
from caas.core.clock import FixedClock
from caas.core.history import subject_history
from caas.core.outbox import enqueue
from caas.core.settings import Settings
from caas.maintenance.models import MaintenanceRecord
from caas.notifications.models import Notification
from caas.ota.models import ConfigurationVersion
from caas.protocol.payments import CARD_DECLINED, CARD_SUCCEEDS
from caas.store import subscriptions
from caas.store.models import Entitlement, Offer, Subscription
from caas.store.rules import add_duration
from tests.billing.conftest import PaymentSandbox, login
from tests.conftest import SmtpInbox
from tests.store.conftest import Owner, delivered_owner, offer, run_all_due, subscribed
from tests.store.engine import engine_keys, signing

__all__ = ["engine_keys", "signing"]

DAY = timedelta(days=1)
# 15.00 net + 21 % Spanish VAT.
PRICE_MINOR = 1_500
GROSS_MINOR = 1_815


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


def _periods(db: Session, subscription: Subscription) -> list[tuple[object, object]]:
    rows = db.scalars(
        select(Entitlement)
        .where(Entitlement.subscription_id == subscription.id)
        .order_by(Entitlement.valid_from)
    )
    return [(row.valid_from, row.valid_until) for row in rows]


def _told(db: Session, owner: Owner, kind: str) -> list[Notification]:
    return list(
        db.scalars(
            select(Notification)
            .where(Notification.user_id == owner.user.id, Notification.kind == kind)
            .order_by(Notification.id)
        )
    )


def test_a_renewal_charges_the_current_price_once_and_the_car_gets_the_next_period(
    db: Session,
    owner: Owner,
    monthly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    smtp: SmtpInbox,
) -> None:
    start = clock.now()
    subscription = subscribed(
        db, owner, monthly, token=payment_sandbox.token(CARD_SUCCEEDS), clock=clock
    )
    first_end = subscription.current_period_end
    run_all_due(settings, sessions, clock, db)
    assert _renewals(db, owner) == []  # nothing before the period's end

    clock.set(first_end)
    run_all_due(settings, sessions, clock, db)

    (payment,) = _renewals(db, owner)
    assert (payment.state, payment.amount_minor) == ("captured", GROSS_MINOR)
    assert payment_sandbox.captures(payment.reference) == 1
    db.refresh(subscription)
    assert subscription.state == "active"
    second_end = add_duration(first_end, "1M")
    assert (subscription.current_period_start, subscription.current_period_end) == (
        first_end,
        second_end,
    )
    assert _periods(db, subscription) == [(start, first_end), (first_end, second_end)]
    reasons = db.scalars(
        select(ConfigurationVersion.reason).where(
            ConfigurationVersion.vehicle_id == owner.vehicle.id
        )
    ).all()
    assert reasons.count("subscription.renewed") == 1
    (told,) = _told(db, owner, "subscription.renewed")
    assert "18,15" in told.body  # Spanish customer, euros with a decimal comma
    assert len(smtp.to(owner.customer.email)) >= 1
    events = [entry.event for entry in subject_history(db, "subscription", subscription.id)]
    assert events == ["subscription.renewed"]

    # A restarted worker an hour later, a duplicated message: nothing is charged or granted
    # twice.
    clock.advance(timedelta(hours=1))
    enqueue(
        db,
        topic=subscriptions.RENEW_TOPIC,
        payload={
            "subscription_id": subscription.id,
            "period_end": first_end.isoformat(),
            "attempt": 0,
        },
        dedupe_key="a stray copy of the first renewal",
        now=clock.now(),
    )
    db.commit()
    run_all_due(settings, sessions, clock, db)
    run_all_due(settings, sessions, clock, db)
    assert len(_renewals(db, owner)) == 1
    assert payment_sandbox.captures(payment.reference) == 1
    assert len(_periods(db, subscription)) == 2


def test_the_next_period_is_renewed_in_turn(
    db: Session,
    owner: Owner,
    monthly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    subscription = subscribed(
        db, owner, monthly, token=payment_sandbox.token(CARD_SUCCEEDS), clock=clock
    )
    for _ in range(3):
        db.refresh(subscription)
        clock.set(subscription.current_period_end)
        run_all_due(settings, sessions, clock, db)
    assert [p.state for p in _renewals(db, owner)] == ["captured"] * 3
    assert len(_periods(db, subscription)) == 4


def test_renewals_due_together_share_one_payment_provider_client(
    db: Session,
    owner: Owner,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two subscriptions renewed by one worker: two payments, one client (a client per charge
    cost more than the charge's round trips; the metered month learnt it first)."""
    token = payment_sandbox.token(CARD_SUCCEEDS)
    for code in ("power_boost", "winter_traction"):
        monthly = offer(db, owner.vehicle, code, "subscription", "1M", net_minor=PRICE_MINOR)
        subscription = subscribed(db, owner, monthly, token=token, clock=clock)
    built: list[SandboxProvider] = []
    make = SandboxProvider.__init__

    def counted(client: SandboxProvider, *args: Any, **kwargs: Any) -> None:
        built.append(client)
        make(client, *args, **kwargs)

    monkeypatch.setattr(SandboxProvider, "__init__", counted)

    clock.set(subscription.current_period_end)
    run_all_due(settings, sessions, clock, db)

    assert [p.state for p in _renewals(db, owner)] == ["captured"] * 2
    assert len(built) == 1


def test_a_failed_renewal_is_retried_on_schedule_the_customer_told_then_it_lapses(
    db: Session,
    owner: Owner,
    monthly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    smtp: SmtpInbox,
) -> None:
    token = payment_sandbox.token(CARD_SUCCEEDS)
    subscription = subscribed(db, owner, monthly, token=token, clock=clock)
    end = subscription.current_period_end
    payment_sandbox.sandbox.change_card(token, CARD_DECLINED)

    clock.set(end)
    run_all_due(settings, sessions, clock, db)
    db.refresh(subscription)
    assert (subscription.state, subscription.attempts) == ("past_due", 1)
    assert subscription.next_attempt_at == end + 1 * DAY
    assert len(_told(db, owner, "subscription.renewal_failed")) == 1

    clock.set(end + 1 * DAY - timedelta(minutes=1))
    run_all_due(settings, sessions, clock, db)
    assert len(_renewals(db, owner)) == 1  # not before its time

    expected = [(1, 2, end + 3 * DAY), (3, 3, end + 5 * DAY)]
    for days, attempts, next_at in expected:
        clock.set(end + days * DAY)
        run_all_due(settings, sessions, clock, db)
        db.refresh(subscription)
        assert (subscription.state, subscription.attempts) == ("past_due", attempts)
        assert subscription.next_attempt_at == next_at

    clock.set(end + 5 * DAY)
    run_all_due(settings, sessions, clock, db)
    db.refresh(subscription)
    assert subscription.state == "lapsed"
    assert subscription.next_attempt_at is None
    renewals = _renewals(db, owner)
    assert [p.state for p in renewals] == ["failed"] * 4
    assert all(payment_sandbox.captures(p.reference) == 0 for p in renewals)
    assert len(_told(db, owner, "subscription.renewal_failed")) == 3
    (lapsed,) = _told(db, owner, "subscription.lapsed")
    assert "rechazada" in lapsed.body  # the reason, in the customer's language
    assert len(_periods(db, subscription)) == 1  # no new entitlement
    subjects = [m.get("Subject") or "" for m in smtp.to(owner.customer.email)]
    assert sum("No se pudo renovar" in s for s in subjects) == 3

    # Later runs change nothing.
    clock.advance(30 * DAY)
    run_all_due(settings, sessions, clock, db)
    assert len(_renewals(db, owner)) == 4


def test_a_retry_that_succeeds_starts_the_next_period_when_paid(
    db: Session,
    owner: Owner,
    monthly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    token = payment_sandbox.token(CARD_DECLINED)
    subscription = subscribed(db, owner, monthly, token=token, clock=clock)
    end = subscription.current_period_end
    clock.set(end)
    run_all_due(settings, sessions, clock, db)
    payment_sandbox.sandbox.change_card(token, CARD_SUCCEEDS)

    clock.set(end + DAY)
    run_all_due(settings, sessions, clock, db)
    db.refresh(subscription)
    assert (subscription.state, subscription.attempts) == ("active", 0)
    # The customer does not pay for the day the car did not run the option.
    assert subscription.current_period_start == end + DAY
    assert subscription.current_period_end == add_duration(end + DAY, "1M")
    assert [p.state for p in _renewals(db, owner)] == ["failed", "captured"]


def test_cancel_stops_at_the_period_end_and_can_be_undone_before_it(
    db: Session,
    owner: Owner,
    monthly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    app_client: TestClient,
) -> None:
    subscription = subscribed(
        db, owner, monthly, token=payment_sandbox.token(CARD_SUCCEEDS), clock=clock
    )
    end = subscription.current_period_end
    login(app_client, owner.user.email)
    listed = app_client.get(f"/api/v1/vehicles/{owner.vehicle.vin}/subscriptions")
    assert listed.status_code == 200, listed.text
    assert [(s["id"], s["renews"]) for s in listed.json()] == [(subscription.id, True)]

    url = f"/api/v1/subscriptions/{subscription.id}"
    cancelled = app_client.post(f"{url}/cancel", headers={"Idempotency-Key": "cancel-0001"})
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["cancel_at_period_end"], cancelled.json()["renews"]) == (True, False)
    again = app_client.post(f"{url}/cancel", headers={"Idempotency-Key": "cancel-0001"})
    assert again.json() == cancelled.json()
    resumed = app_client.post(f"{url}/resume", headers={"Idempotency-Key": "resume-0001"})
    assert resumed.json()["renews"] is True
    assert app_client.post(f"{url}/cancel", headers={"Idempotency-Key": "cancel-0002"}).is_success

    clock.set(end)
    run_all_due(settings, sessions, clock, db)
    db.refresh(subscription)
    assert subscription.state == "cancelled"
    assert _renewals(db, owner) == []
    assert len(_periods(db, subscription)) == 1
    assert len(_told(db, owner, "subscription.ended")) == 1
    late = app_client.post(f"{url}/resume", headers={"Idempotency-Key": "resume-0002"})
    assert (late.status_code, late.json()["code"]) == (409, "subscription.ended")
    events = [entry.event for entry in subject_history(db, "subscription", subscription.id)]
    assert events == [
        "subscription.cancel_requested",
        "subscription.resumed",
        "subscription.cancel_requested",
        "subscription.ended",
    ]


def test_another_customer_cannot_see_or_cancel_a_subscription(
    db: Session,
    owner: Owner,
    monthly: Offer,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    app_client: TestClient,
) -> None:
    subscription = subscribed(
        db, owner, monthly, token=payment_sandbox.token(CARD_SUCCEEDS), clock=clock
    )
    stranger = delivered_owner(db, settings, clock)
    login(app_client, stranger.user.email)
    cancel = app_client.post(
        f"/api/v1/subscriptions/{subscription.id}/cancel",
        headers={"Idempotency-Key": "cancel-stranger"},
    )
    assert (cancel.status_code, cancel.json()["code"]) == (404, "subscription.not_found")
    listed = app_client.get(f"/api/v1/vehicles/{owner.vehicle.vin}/subscriptions")
    assert listed.status_code == 404
    no_key = app_client.post(f"/api/v1/subscriptions/{subscription.id}/cancel")
    assert no_key.status_code == 422


def test_an_option_that_needs_the_maintenance_plan_waits_for_the_service_then_renews(
    db: Session,
    owner: Owner,
    monthly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    feature = db.get_one(Feature, monthly.feature_id)
    feature.requires_maintenance = True
    subscription = subscribed(
        db, owner, monthly, token=payment_sandbox.token(CARD_SUCCEEDS), clock=clock
    )
    end = subscription.current_period_end
    # Delivered long ago and never serviced: the car is off its plan.
    owner.vehicle.delivered_at = clock.now() - 3 * 365 * DAY
    db.commit()

    clock.set(end)
    run_all_due(settings, sessions, clock, db)
    db.refresh(subscription)
    assert (subscription.state, subscription.attempts) == ("past_due", 1)
    assert _renewals(db, owner) == []  # nothing charged while it may not be renewed
    (told,) = _told(db, owner, "subscription.renewal_failed")
    assert "mantenimiento" in told.body

    db.add(
        MaintenanceRecord(
            vehicle_id=owner.vehicle.id,
            performed_at=end + DAY / 2,
            odometer_km=30_000,
            workshop_user_id=owner.user.id,
            work_description="Service",
            included_in_plan=False,
            created_at=end + DAY / 2,
        )
    )
    db.commit()
    clock.set(end + DAY)
    run_all_due(settings, sessions, clock, db)
    db.refresh(subscription)
    assert subscription.state == "active"
    assert [p.state for p in _renewals(db, owner)] == ["captured"]


def test_a_car_sold_meanwhile_is_not_renewed_for_its_former_owner(
    db: Session,
    owner: Owner,
    monthly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    subscription = subscribed(
        db, owner, monthly, token=payment_sandbox.token(CARD_SUCCEEDS), clock=clock
    )
    buyer = delivered_owner(db, settings, clock)
    owner.vehicle.owner_customer_id = buyer.customer.id
    db.commit()

    clock.set(subscription.current_period_end)
    run_all_due(settings, sessions, clock, db)
    db.refresh(subscription)
    assert (subscription.state, subscription.attempts) == ("past_due", 1)
    assert _renewals(db, owner) == []
    (told,) = _told(db, owner, "subscription.renewal_failed")
    assert told.context["reason"] == "not_eligible"
    assert "no se puede renovar" in told.body
