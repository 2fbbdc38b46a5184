"""The provider's events settle a payment whatever order they arrive in, as often as they come:
each carries the authorisation as it stands, and the payment only ever moves forward."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.billing import ledger, rules, service
from caas.billing.models import Invoice, Payment
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.money import Money
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from caas.protocol.webhooks import SIGNATURE_HEADER, sign
from tests.billing.conftest import WEBHOOK_SECRET, PaymentSandbox, ReceivedEvent, buyer, deliver

ACTOR = Actor(kind="customer", label="test")
URL = "/api/v1/webhooks/payments"


def _store_payment(
    db: Session, customer_id: int, token: str, key: str, clock: FixedClock
) -> Payment:
    """A store payment on record (pending), whose provider calls the test makes by hand."""
    payment = service.begin_store_payment(
        db,
        customer_id=customer_id,
        kind="option",
        lines=[rules.priced_line("Winter traction, 1 month", 1_000, 2100)],
        currency="EUR",
        country="ES",
        payment_method=token,
        idempotency_key=key,
        actor=ACTOR,
        now=clock.now(),
    )
    db.commit()
    return payment


def _at_the_provider(
    settings: Settings, payment: Payment, token: str, *, refund_minor: int = 0
) -> str:
    """Authorise, capture (and refund) at the provider with the payment's own keys, as calls
    whose answers never reached the platform; returns the authorisation's id."""
    amount = Money(payment.amount_minor, payment.currency)
    with SandboxProvider.from_settings(settings) as provider:
        held = provider.authorise(
            amount, token, rules.provider_key(payment.reference, "authorise"), payment.reference
        )
        assert held.provider_ref is not None
        provider.capture(
            held.provider_ref, amount, rules.provider_key(payment.reference, "capture")
        )
        if refund_minor:
            provider.refund(
                held.provider_ref,
                Money(refund_minor, payment.currency),
                rules.provider_key(payment.reference, f"refund-0-{refund_minor}"),
            )
        return held.provider_ref


def _fresh(db: Session, payment_id: int) -> Payment:
    db.expire_all()
    return db.get_one(Payment, payment_id)


def _documents(db: Session, payment_id: int) -> list[str]:
    return sorted(
        db.scalars(
            select(Invoice.kind).where(Invoice.customer_id == _fresh(db, payment_id).customer_id)
        )
    )


def test_a_capture_event_before_the_authorisation_event_settles_once(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = _store_payment(db, who.customer.id, token, "order-capture-first", clock)
    _at_the_provider(settings, payment, token)
    authorised = payment_sandbox.inbox.wait_for(payment.reference, "authorization.succeeded")
    captured = payment_sandbox.inbox.wait_for(payment.reference, "capture.succeeded")

    assert deliver(app_client, captured)["state"] == "captured"
    assert deliver(app_client, authorised)["state"] == "captured"
    assert deliver(app_client, captured)["state"] == "captured"
    payment = _fresh(db, payment.id)
    assert payment.provider_ref is not None and payment.card_last4 == "4242"
    assert _documents(db, payment.id) == ["option"]
    assert ledger.customer_balance(db, who.customer.id) == payment.amount_minor
    assert payment_sandbox.captures(payment.reference) == 1


def test_a_refund_event_before_the_capture_event_settles_then_refunds_with_one_note(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = _store_payment(db, who.customer.id, token, "order-refund-first", clock)
    _at_the_provider(settings, payment, token, refund_minor=500)
    refunded = payment_sandbox.inbox.wait_for(payment.reference, "refund.succeeded")
    captured = payment_sandbox.inbox.wait_for(payment.reference, "capture.succeeded")
    authorised = payment_sandbox.inbox.wait_for(payment.reference, "authorization.succeeded")

    assert deliver(app_client, refunded)["state"] == "captured"
    payment = _fresh(db, payment.id)
    assert payment.refunded_minor == 500
    assert _documents(db, payment.id) == ["credit_note", "option"]
    # The earlier events, late, and the refund again: nothing more.
    for received in (captured, authorised, refunded):
        assert deliver(app_client, received)["state"] == "captured"
    payment = _fresh(db, payment.id)
    assert payment.refunded_minor == 500
    assert _documents(db, payment.id) == ["credit_note", "option"]
    assert ledger.customer_balance(db, who.customer.id) == payment.amount_minor - 500


def test_the_same_event_twice_changes_nothing_the_second_time(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = _store_payment(db, who.customer.id, token, "order-twice", clock)
    _at_the_provider(settings, payment, token)
    captured = payment_sandbox.inbox.wait_for(payment.reference, "capture.succeeded")
    deliver(app_client, captured)
    entries = len(ledger.entries_of_payment(db, payment.id))
    history = db.scalar(
        select(func.count()).select_from(Invoice).where(Invoice.payment_id == payment.id)
    )
    deliver(app_client, captured)
    assert len(ledger.entries_of_payment(db, payment.id)) == entries
    assert (
        db.scalar(select(func.count()).select_from(Invoice).where(Invoice.payment_id == payment.id))
        == history
        == 1
    )


def test_a_badly_signed_event_is_refused_and_changes_nothing(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = _store_payment(db, who.customer.id, token, "order-forged", clock)
    _at_the_provider(settings, payment, token)
    captured = payment_sandbox.inbox.wait_for(payment.reference, "capture.succeeded")
    headers = {"Content-Type": "application/json"}

    # The sandbox's signature over another body (a replay with the body changed).
    tampered = captured.body.replace(b'"captured"', b'"captured" ', 1)
    assert tampered != captured.body
    answer = app_client.post(
        URL, content=tampered, headers={**headers, SIGNATURE_HEADER: captured.signature or ""}
    )
    assert answer.status_code == 401
    assert answer.json()["code"] == "webhook.bad_signature"
    # Signed with the wrong secret, and not signed at all.
    wrong = {**headers, SIGNATURE_HEADER: sign(captured.body, WEBHOOK_SECRET + "x")}
    assert app_client.post(URL, content=captured.body, headers=wrong).status_code == 401
    assert app_client.post(URL, content=captured.body, headers=headers).status_code == 401
    payment = _fresh(db, payment.id)
    assert payment.state == "pending"
    assert ledger.entries_of_payment(db, payment.id) == []
    assert _documents(db, payment.id) == []

    # The genuine event still settles it.
    assert deliver(app_client, ReceivedEvent(captured.body, captured.signature))["state"] == (
        "captured"
    )
