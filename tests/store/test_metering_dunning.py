"""Dunning of a declined month of pay-per-use: tried again after 1, 3 and 7 days with the
customer told each time, then the car's metered options paused (a new manifest) until a later
try with a working card pays the month and switches them back on."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.models import User
from caas.billing.invoices import invoice_of_payment
from caas.billing.models import Payment
from caas.core.clock import FixedClock
from caas.core.history import customer_timeline
from caas.core.outbox import OutboxMessage
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.protocol.payments import CARD_DECLINED, CARD_SUCCEEDS
from caas.store import metering
from caas.store.models import Offer, Purchase
from tests.billing.conftest import PaymentSandbox
from tests.store.conftest import Owner, run_all_due
from tests.store.engine import engine_keys, signing
from tests.store.test_metering import _bought, _newest, _on, _rights, _told, _use, hourly, owner

__all__ = ["engine_keys", "hourly", "owner", "signing"]

OPERATOR = "operator@caas.example"  # the seed's operator


def _month_payments(db: Session, owner: Owner) -> list[Payment]:
    db.expire_all()
    return list(
        db.scalars(
            select(Payment)
            .where(Payment.customer_id == owner.customer.id, Payment.kind == "metered")
            .order_by(Payment.id)
        )
    )


def test_a_declined_month_is_retried_then_pauses_the_option_until_a_new_card_pays_it(
    db: Session,
    owner: Owner,
    hourly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    purchase: Purchase = _bought(
        db,
        owner,
        hourly,
        cap=None,
        settings=settings,
        sessions=sessions,
        clock=clock,
        payment_sandbox=payment_sandbox,
    )
    token = purchase.payment_method
    assert token is not None
    metering.start_metering(db, now=clock.now())
    db.commit()
    _use(db, owner, clock.now() + timedelta(hours=1), 10)
    payment_sandbox.sandbox.change_card(token, CARD_DECLINED)

    failed_at = metering.next_month_run(clock.now())
    clock.set(failed_at)
    run_all_due(settings, sessions, clock, db)
    (first,) = _month_payments(db, owner)
    assert (first.state, first.amount_minor) == ("failed", 1_815)  # 10 h × 1.50 + 21 % VAT
    assert len(_told(db, owner, "metered.charge_failed")) == 1

    # Each try on its day, each declined, each told; the option runs meanwhile.
    for tries, days in enumerate(metering.RETRY_AFTER_DAYS, start=2):
        clock.set(failed_at + timedelta(days=days) - timedelta(minutes=1))
        run_all_due(settings, sessions, clock, db)
        assert len(_month_payments(db, owner)) == tries - 1  # not before its day
        clock.set(failed_at + timedelta(days=days))
        run_all_due(settings, sessions, clock, db)
        payments = _month_payments(db, owner)
        assert [p.state for p in payments] == ["failed"] * tries
        assert len(_told(db, owner, "metered.charge_failed")) == tries
    assert payment_sandbox.captures(payments[0].reference) == 0

    # After the last try, the option is paused: ended now, a manifest without it.
    paused = _newest(db, owner)
    assert not _on(paused, clock.now() + timedelta(days=40))
    assert all(right.valid_until is not None for right in _rights(db, owner))
    assert len(_told(db, owner, "metered.paused")) == 1

    # The customer's card works again (a new one): the next try pays and switches it back on.
    payment_sandbox.sandbox.change_card(token, CARD_SUCCEEDS)
    clock.advance(metering.PAUSED_RETRY_EVERY)
    run_all_due(settings, sessions, clock, db)
    payments = _month_payments(db, owner)
    assert [p.state for p in payments] == ["failed"] * 4 + ["captured"]
    paid = payments[-1]
    assert paid.amount_minor == first.amount_minor
    assert payment_sandbox.captures(paid.reference) == 1
    assert invoice_of_payment(db, paid.id) is not None
    resumed = _newest(db, owner)
    assert resumed.version > paused.version
    assert _on(resumed, clock.now() + timedelta(minutes=1))
    assert len(_told(db, owner, "metered.resumed")) == 1

    # Nothing more is tried for that month.
    clock.advance(metering.PAUSED_RETRY_EVERY * 2)
    run_all_due(settings, sessions, clock, db)
    assert len(_month_payments(db, owner)) == 5


def test_a_month_unpaid_after_the_paused_tries_is_written_off_and_both_sides_told(
    db: Session,
    owner: Owner,
    hourly: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    purchase: Purchase = _bought(
        db,
        owner,
        hourly,
        cap=None,
        settings=settings,
        sessions=sessions,
        clock=clock,
        payment_sandbox=payment_sandbox,
    )
    assert purchase.payment_method is not None
    metering.start_metering(db, now=clock.now())
    db.commit()
    _use(db, owner, clock.now() + timedelta(hours=1), 10)
    payment_sandbox.sandbox.change_card(purchase.payment_method, CARD_DECLINED)

    failed_at = metering.next_month_run(clock.now())
    clock.set(failed_at)
    run_all_due(settings, sessions, clock, db)
    for days in metering.RETRY_AFTER_DAYS:
        clock.set(failed_at + timedelta(days=days))
        run_all_due(settings, sessions, clock, db)
    assert len(_told(db, owner, "metered.paused")) == 1
    for _ in range(metering.PAUSED_TRIES):
        clock.advance(metering.PAUSED_RETRY_EVERY)
        run_all_due(settings, sessions, clock, db)

    # Every try declined: the first charge, three dunning tries, three while paused.
    payments = _month_payments(db, owner)
    assert [p.state for p in payments] == ["failed"] * (metering.LAST_TRY + 1) == ["failed"] * 7
    assert clock.now() == failed_at + timedelta(days=28)
    last = payments[-1]
    (written_off,) = [
        entry
        for entry in customer_timeline(db, owner.customer.id)
        if entry.event == "metered.uncollectible"
    ]
    assert (written_off.subject_type, written_off.subject_id) == ("payment", last.id)
    assert written_off.at == clock.now()
    assert written_off.details["tries"] == 7
    assert written_off.details["amount_minor"] == 1_815
    assert written_off.details["vehicle_id"] == owner.vehicle.id
    # The customer: told at each failed try but the last, which the write-off tells instead.
    assert len(_told(db, owner, "metered.charge_failed")) == 6
    (told,) = _told(db, owner, "metered.uncollectible")
    assert owner.vehicle.vin in told.body and "18,15" in told.body  # Spanish customer
    # Every operator, with the customer's file.
    operator = db.scalars(select(User).where(User.email == OPERATOR)).one()
    (alert,) = db.scalars(
        select(Notification).where(
            Notification.user_id == operator.id,
            Notification.kind == "metered.uncollectible_operator",
        )
    ).all()
    assert owner.vehicle.vin in alert.title
    assert f"/operator/customers/{owner.customer.id}" in alert.body

    # Nothing more is tried, ever; the option stays off.
    paused = _newest(db, owner)
    assert not _on(paused, clock.now() + timedelta(minutes=1))
    for _ in range(4):
        clock.advance(metering.PAUSED_RETRY_EVERY)
        run_all_due(settings, sessions, clock, db)
    assert len(_month_payments(db, owner)) == 7
    assert _newest(db, owner).version == paused.version
    queued = db.scalars(
        select(OutboxMessage).where(
            OutboxMessage.topic == metering.RETRY_TOPIC, OutboxMessage.done_at.is_(None)
        )
    ).all()
    assert queued == []
