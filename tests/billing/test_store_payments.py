"""The store's payments: held at checkout, captured (and invoiced) or voided later, once."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.billing import rules, service
from caas.billing.invoices import invoice_lines, invoice_of_payment
from caas.billing.models import Invoice, Payment
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.errors import Conflict
from caas.core.history import Actor, customer_timeline
from caas.core.settings import Settings
from caas.protocol.payments import CARD_DECLINED, CARD_SUCCEEDS
from tests.billing.conftest import PaymentSandbox, buyer

ACTOR = Actor(kind="customer", label="test")


def _lines() -> list[rules.LineDraft]:
    return [
        rules.priced_line("Winter traction, 1 month", 1_000, 2100),
        rules.priced_line("Power boost, 1 day", 999, 2100),
    ]


def _begin(db: Session, customer_id: int, token: str, key: str = "option-key-0001") -> Payment:
    return service.begin_store_payment(
        db,
        customer_id=customer_id,
        kind="option",
        lines=_lines(),
        currency="EUR",
        country="ES",
        payment_method=token,
        idempotency_key=key,
        actor=ACTOR,
        now=FixedClock().now(),
    )


def test_a_store_payment_is_held_then_captured_and_invoiced_with_its_lines(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = _begin(db, who.customer.id, token)
    # 10.00 + 2.10 and 9.99 + 2.10 (2.0979 rounds half up): VAT per line.
    assert payment.amount_minor == 1_210 + 1_209
    assert payment.sale_id is None
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.authorise_payment(
            db, payment, payment_method=token, provider=provider, actor=ACTOR, now=clock.now()
        )
        assert payment.state == "authorised"
        assert payment_sandbox.captures(payment.reference) == 0
        assert invoice_of_payment(db, payment.id) is None
        payment = service.capture_payment(
            db, payment, provider=provider, actor=ACTOR, now=clock.now()
        )
        assert payment.state == "captured"
        # A retry repeats nothing.
        again = service.capture_payment(
            db, payment, provider=provider, actor=ACTOR, now=clock.now()
        )
    assert again.state == "captured"
    assert payment_sandbox.captures(payment.reference) == 1
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None
    assert (invoice.kind, invoice.gross_minor) == ("option", payment.amount_minor)
    assert [line.description for line in invoice_lines(db, invoice.id)] == [
        "Winter traction, 1 month",
        "Power boost, 1 day",
    ]
    assert (
        db.scalar(select(func.count()).select_from(Invoice).where(Invoice.payment_id == payment.id))
        == 1
    )
    events = [entry.event for entry in customer_timeline(db, who.customer.id)]
    assert {"payment.authorised", "payment.captured", "invoice.issued"} <= set(events)


def test_a_held_payment_is_voided_and_never_captured(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = _begin(db, who.customer.id, token)
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.authorise_payment(
            db, payment, payment_method=token, provider=provider, actor=ACTOR, now=clock.now()
        )
        payment = service.void_payment(
            db, payment, provider=provider, reason="car_rejected", actor=ACTOR, now=clock.now()
        )
        assert payment.state == "voided"
        assert (
            service.capture_payment(
                db, payment, provider=provider, actor=ACTOR, now=clock.now()
            ).state
            == "voided"
        )
    assert payment_sandbox.captures(payment.reference) == 0
    assert invoice_of_payment(db, payment.id) is None


def test_a_declined_card_fails_the_payment(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_DECLINED)
    payment = _begin(db, who.customer.id, token)
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.authorise_payment(
            db, payment, payment_method=token, provider=provider, actor=ACTOR, now=clock.now()
        )
    assert payment.state == "failed"
    assert payment.failure_code


def test_the_same_key_finds_the_same_payment_and_another_request_is_refused(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    first = _begin(db, who.customer.id, token)
    assert _begin(db, who.customer.id, token).id == first.id
    with pytest.raises(Conflict):
        _begin(db, who.customer.id, payment_sandbox.token(CARD_SUCCEEDS))
