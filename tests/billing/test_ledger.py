"""The ledger: balanced, idempotent, append-only postings of every money movement."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from caas.billing import ledger, rules, service
from caas.billing.models import LedgerEntry, Payment
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from tests.billing.conftest import PaymentSandbox, buyer

ACTOR = Actor(kind="customer", label="test")


def _held_payment(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> Payment:
    """A store payment of two lines (12.10 + 12.09 gross, Spain's 21 %), authorised."""
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = service.begin_store_payment(
        db,
        customer_id=who.customer.id,
        kind="option",
        lines=[
            rules.priced_line("Winter traction, 1 month", 1_000, 2100),
            rules.priced_line("Power boost, 1 day", 999, 2100),
        ],
        currency="EUR",
        country="ES",
        payment_method=token,
        idempotency_key="ledger-key-0001",
        actor=ACTOR,
        now=clock.now(),
    )
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.authorise_payment(
            db, payment, payment_method=token, provider=provider, actor=ACTOR, now=clock.now()
        )
    assert payment.state == "authorised"
    return payment


def _assert_every_posting_balances(db: Session) -> None:
    sums = db.execute(
        select(
            LedgerEntry.idempotency_key,
            func.sum(LedgerEntry.debit_minor),
            func.sum(LedgerEntry.credit_minor),
        ).group_by(LedgerEntry.idempotency_key)
    ).all()
    assert sums
    assert all(debits == credits for _key, debits, credits in sums)


def test_capture_and_partial_refund_leave_the_right_balances(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    payment = _held_payment(db, settings, clock, payment_sandbox)
    customer_id = payment.customer_id
    assert ledger.balances(db, customer_id=customer_id) == {
        ledger.HOLDS: 2_419,
        ledger.HOLDS_RELEASED: -2_419,
    }
    assert ledger.customer_balance(db, customer_id) == 0  # a hold is not money in
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.capture_payment(
            db, payment, provider=provider, actor=ACTOR, now=clock.now()
        )
        assert payment.state == "captured"
        payment = service.refund_payment(
            db, payment, amount_minor=419, provider=provider, actor=ACTOR, now=clock.now()
        )
    balances = ledger.balances(db, customer_id=customer_id)
    # No option was bought through the store's purchase here: the lines' descriptions name
    # the revenue accounts.
    assert balances == {
        ledger.HOLDS: 0,
        ledger.HOLDS_RELEASED: 0,
        ledger.RECEIVABLE: 0,
        ledger.CASH: 2_419 - 419,
        ledger.REFUNDS: 419,
        ledger.revenue("Winter traction, 1 month"): -1_000,
        ledger.revenue("Power boost, 1 day"): -999,
        ledger.vat_payable("ES"): -(210 + 210),
    }
    assert ledger.customer_balance(db, customer_id) == 2_000
    _assert_every_posting_balances(db)
    entries = ledger.entries_of_payment(db, payment.id)
    assert {entry.kind for entry in entries} == {"authorisation", "capture", "refund"}
    assert {entry.provider_ref for entry in entries} == {payment.provider_ref}
    assert {entry.reference for entry in entries} == {payment.reference}


def test_a_void_releases_the_hold_and_takes_nothing(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    payment = _held_payment(db, settings, clock, payment_sandbox)
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.void_payment(
            db, payment, provider=provider, reason="car_rejected", actor=ACTOR, now=clock.now()
        )
    assert payment.state == "voided"
    assert ledger.balances(db, customer_id=payment.customer_id) == {
        ledger.HOLDS: 0,
        ledger.HOLDS_RELEASED: 0,
    }


def test_a_repeated_movement_posts_nothing_twice(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    payment = _held_payment(db, settings, clock, payment_sandbox)
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.capture_payment(
            db, payment, provider=provider, actor=ACTOR, now=clock.now()
        )
        service.capture_payment(db, payment, provider=provider, actor=ACTOR, now=clock.now())
        payment = service.refund_payment(
            db, payment, amount_minor=419, provider=provider, actor=ACTOR, now=clock.now()
        )
    # The provider's events arrive after the calls: the same capture, the same refund total.
    service._record_refund(db, payment, 419, actor=ACTOR, now=clock.now())
    assert not ledger.post_authorisation(db, payment, now=clock.now())
    assert not ledger.post_refund(
        db, payment, amount_minor=419, refunded_total=419, now=clock.now()
    )
    assert ledger.post_chargeback(
        db, payment, amount_minor=500, provider_ref="cb_1", now=clock.now()
    )
    assert not ledger.post_chargeback(
        db, payment, amount_minor=500, provider_ref="cb_1", now=clock.now()
    )
    postings = db.execute(
        select(LedgerEntry.kind, func.count(func.distinct(LedgerEntry.idempotency_key)))
        .where(LedgerEntry.payment_id == payment.id)
        .group_by(LedgerEntry.kind)
    ).all()
    assert dict(postings) == {"authorisation": 1, "capture": 1, "refund": 1, "chargeback": 1}
    assert ledger.customer_balance(db, payment.customer_id) == 2_419 - 419 - 500
    _assert_every_posting_balances(db)


def test_an_unbalanced_posting_is_refused(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    payment = _held_payment(db, settings, clock, payment_sandbox)
    with pytest.raises(ledger.UnbalancedPosting):
        ledger.post(
            db,
            payment,
            kind="capture",
            key="unbalanced",
            lines=[
                ledger.Line(ledger.CASH, debit_minor=10),
                ledger.Line(ledger.REFUNDS, credit_minor=9),
            ],
            now=clock.now(),
        )


def test_the_database_refuses_to_change_or_delete_a_ledger_entry(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    payment = _held_payment(db, settings, clock, payment_sandbox)
    db.commit()
    entry_id = ledger.entries_of_payment(db, payment.id)[0].id
    with pytest.raises(DBAPIError, match="cannot be changed"):
        db.execute(update(LedgerEntry).where(LedgerEntry.id == entry_id).values(debit_minor=1))
    db.rollback()
    with pytest.raises(DBAPIError, match="cannot be changed"):
        db.execute(delete(LedgerEntry).where(LedgerEntry.id == entry_id))
    db.rollback()
