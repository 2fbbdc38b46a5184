"""Reminders: a trial's end (once, and nothing is charged), a yearly plan's renewal, a service
due (once per due point), in the customer's language; the sweep that sends them also renews a
subscription nobody queued."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caas.billing.models import Payment
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.maintenance.models import MaintenanceRecord
from caas.maintenance.rules import add_months
from caas.notifications.models import Notification
from caas.notifications.templates import LANGUAGES, render, template_language
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store import entitlements, reminders
from caas.store.models import Subscription
from caas.store.rules import add_duration
from tests.billing.conftest import PaymentSandbox
from tests.conftest import SmtpInbox
from tests.store.conftest import Owner, delivered_owner, feature_of, offer, run_all_due, subscribed
from tests.store.engine import engine_keys, signing

__all__ = ["engine_keys", "signing"]

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@pytest.fixture
def owner(db: Session, settings: Settings, clock: FixedClock, signing: object) -> Owner:
    return delivered_owner(db, settings, clock)


def _told(db: Session, owner: Owner, kind: str) -> list[Notification]:
    return list(
        db.scalars(
            select(Notification).where(
                Notification.user_id == owner.user.id, Notification.kind == kind
            )
        )
    )


def test_a_trial_ending_is_reminded_once_and_nothing_is_charged(
    db: Session,
    owner: Owner,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    smtp: SmtpInbox,
) -> None:
    now = clock.now()
    trial_end = add_duration(now, "1M")
    entitlements.grant(
        db,
        vehicle=owner.vehicle,
        feature=feature_of(db, owner.vehicle, "winter_traction"),
        source="trial",
        valid_from=now,
        valid_until=trial_end,
        customer_id=owner.customer.id,
        actor=owner.actor(),
        now=now,
    )  # granting starts the reminders' sweep
    db.commit()
    run_all_due(settings, sessions, clock, db)
    assert _told(db, owner, "trial.ending") == []

    clock.set(trial_end - 3 * DAY + HOUR)
    run_all_due(settings, sessions, clock, db)
    for _ in range(3):  # later runs, and a restarted worker
        clock.advance(HOUR)
        run_all_due(settings, sessions, clock, db)
    clock.set(trial_end + DAY)
    run_all_due(settings, sessions, clock, db)

    (told,) = _told(db, owner, "trial.ending")
    assert "no se cobra nada" in told.body
    mails = [m for m in smtp.to(owner.customer.email) if "prueba gratuita" in (m["Subject"] or "")]
    assert len(mails) == 1
    paid = db.scalar(
        select(func.count()).select_from(Payment).where(Payment.customer_id == owner.customer.id)
    )
    assert paid == 0
    assert (
        db.scalars(select(Subscription).where(Subscription.vehicle_id == owner.vehicle.id)).all()
        == []
    )


def test_a_yearly_plan_is_reminded_a_week_before_it_renews_and_a_monthly_one_is_not(
    db: Session,
    owner: Owner,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    yearly = offer(db, owner.vehicle, "power_boost", "subscription", "1Y", net_minor=10_000)
    monthly = offer(db, owner.vehicle, "winter_traction", "subscription", "1M", net_minor=900)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    year = subscribed(db, owner, yearly, token=token, clock=clock)
    subscribed(db, owner, monthly, token=token, clock=clock)
    renews_at = year.current_period_end

    clock.set(renews_at - 7 * DAY - HOUR)
    run_all_due(settings, sessions, clock, db)
    assert _told(db, owner, "subscription.renewal_reminder") == []
    clock.set(renews_at - 7 * DAY + HOUR)
    run_all_due(settings, sessions, clock, db)
    clock.advance(DAY)
    run_all_due(settings, sessions, clock, db)

    (told,) = _told(db, owner, "subscription.renewal_reminder")
    assert "121,00" in told.body  # 100.00 + 21 % VAT
    assert told.context["renews_at"] == renews_at.isoformat()


def test_a_service_due_is_reminded_once_per_due_point(
    db: Session,
    owner: Owner,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
) -> None:
    delivered_on = clock.now()
    due_on = add_months(delivered_on.date(), 12)  # Aura: every 20,000 km or 12 months
    reminders.start_reminding(db, now=clock.now())
    db.commit()
    run_all_due(settings, sessions, clock, db)

    clock.set(delivered_on + (due_on - delivered_on.date()) - 31 * DAY)
    run_all_due(settings, sessions, clock, db)
    assert _told(db, owner, "maintenance.due") == []
    for _ in range(3):
        clock.advance(DAY)
        run_all_due(settings, sessions, clock, db)
    (first,) = _told(db, owner, "maintenance.due")
    assert "20000 km" in first.body

    # The service is recorded: the next due point gets its own reminder, once.
    performed = clock.now()
    db.add(
        MaintenanceRecord(
            vehicle_id=owner.vehicle.id,
            performed_at=performed,
            odometer_km=15_000,
            workshop_user_id=owner.user.id,
            work_description="12-month service",
            included_in_plan=True,
            created_at=performed,
        )
    )
    db.commit()
    clock.advance(DAY)
    run_all_due(settings, sessions, clock, db)
    assert len(_told(db, owner, "maintenance.due")) == 1
    clock.set(performed + 340 * DAY)
    run_all_due(settings, sessions, clock, db)
    clock.advance(DAY)
    run_all_due(settings, sessions, clock, db)
    assert len(_told(db, owner, "maintenance.due")) == 2


def test_the_sweep_renews_a_subscription_that_nobody_queued(
    db: Session,
    owner: Owner,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    monthly = offer(db, owner.vehicle, "power_boost", "subscription", "1M", net_minor=1_500)
    now = clock.now()
    subscription = Subscription(
        vehicle_id=owner.vehicle.id,
        customer_id=owner.customer.id,
        offer_id=monthly.id,
        code="power_boost",
        state="active",
        payment_method=payment_sandbox.token(CARD_SUCCEEDS),
        current_period_start=now,
        current_period_end=add_duration(now, "1M"),
        created_at=now,
        updated_at=now,
    )
    db.add(subscription)
    reminders.start_reminding(db, now=now)
    db.commit()
    end = subscription.current_period_end
    run_all_due(settings, sessions, clock, db)

    clock.set(end)
    run_all_due(settings, sessions, clock, db)
    db.refresh(subscription)
    assert subscription.current_period_start == end
    (renewal,) = db.scalars(
        select(Payment).where(Payment.customer_id == owner.customer.id, Payment.kind == "renewal")
    ).all()
    assert renewal.state == "captured"


KINDS = {
    "subscription.renewed": {
        "amount_minor": 1815,
        "currency": "EUR",
        "period_end": "2026-03-15T09:00:00+00:00",
    },
    "subscription.renewal_failed": {
        "reason": "card_declined",
        "period_end": "2026-03-15T09:00:00+00:00",
        "next_attempt_at": "2026-03-16T09:00:00+00:00",
    },
    "subscription.lapsed": {
        "reason": "maintenance_overdue",
        "period_end": "2026-03-15T09:00:00+00:00",
    },
    "subscription.ended": {"period_end": "2026-03-15T09:00:00+00:00"},
    "subscription.renewal_reminder": {
        "renews_at": "2027-01-15T09:00:00+00:00",
        "amount_minor": 12100,
        "currency": "EUR",
    },
    "occurrence.failed": {
        "starts_at": "2026-03-21T07:00:00+00:00",
        "ends_at": "2026-03-22T21:00:00+00:00",
        "timezone": "Europe/Madrid",
        "reason": "card_declined",
    },
    "trial.ending": {"ends_at": "2026-02-15T09:00:00+00:00"},
    "maintenance.due": {"due_on": "2027-01-15", "due_km": 20000, "overdue": False},
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_time_message_is_written_in_every_language(kind: str, language: str) -> None:
    context = {"name": "Ana", "feature": "Power boost", "vin": "VCAAURA04TM635611", **KINDS[kind]}
    message = render(kind, language, context, portal_url="https://caas.example/portal")
    assert template_language(kind, language) == language
    assert message.subject and "Ana" in message.text
    assert "VCAAURA04TM635611" in message.text
    assert "https://caas.example/portal" in message.text
    assert "{{" not in message.text and "None" not in message.text
