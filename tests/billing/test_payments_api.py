"""Paying an order over HTTP, against the payment sandbox served on a real port."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.billing import service
from caas.billing.models import Invoice, Payment
from caas.billing.provider import SandboxProvider
from caas.billing.service import PROVIDER
from caas.core.clock import FixedClock
from caas.core.errors import Conflict
from caas.core.history import customer_timeline
from caas.core.outbox import pending
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.protocol.payments import (
    CARD_ANSWERS_LATE,
    CARD_DECLINED,
    CARD_PROVIDER_ERROR,
    CARD_SUCCEEDS,
    Authorization,
    CardSummary,
    Event,
)
from caas.protocol.webhooks import sign
from caas.sales.models import Sale
from tests.billing.conftest import WEBHOOK_SECRET, PaymentSandbox, buyer, deliver, login, pay


def _payment(db: Session, payment_id: int) -> Payment:
    db.expire_all()
    return db.get_one(Payment, payment_id)


def _state(db: Session, sale_id: int) -> str:
    db.expire_all()
    return db.get_one(Sale, sale_id).state


def test_deposit_is_captured_invoiced_notified_and_the_order_goes_to_the_factory(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    response = pay(
        app_client, who.sale.id, "deposit", payment_sandbox.token(CARD_SUCCEEDS), "deposit-0001"
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["state"] == "captured"
    assert body["amount"]["amount_minor"] == who.sale.deposit_minor
    assert (body["card_brand"], body["card_last4"]) == ("visa", "4242")
    assert body["invoice_number"].startswith("ES-2026-")

    assert _state(db, who.sale.id) == "waiting_for_factory"
    assert service.amount_paid(db, who.sale.id) == who.sale.deposit_minor
    payment = _payment(db, body["id"])
    assert payment_sandbox.captures(payment.reference) == 1
    events = [entry.event for entry in customer_timeline(db, who.customer.id)]
    assert "payment.captured" in events
    assert "invoice.issued" in events
    assert "order.waiting_for_factory" in events
    kinds = db.scalars(select(Notification.kind).where(Notification.user_id == who.user.id))
    assert "payment.received" in set(kinds)
    assert pending(db, "email.send")


def test_declined_card_answers_402_and_only_keeps_the_failed_attempt(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    token = payment_sandbox.token(CARD_DECLINED)
    response = pay(app_client, who.sale.id, "deposit", token, "declined-01")
    assert response.status_code == 402, response.text
    assert response.json()["code"] == "payment.declined"
    assert _state(db, who.sale.id) == "awaiting_deposit"
    (payment,) = service.payments_for_sale(db, who.sale.id)
    assert (payment.state, payment.failure_code) == ("failed", "card_declined")
    assert payment_sandbox.captures(payment.reference) == 0
    assert db.scalar(select(func.count(Invoice.id)).where(Invoice.sale_id == who.sale.id)) == 0

    # The same request again gets the same answer; the same key for another card is refused;
    # a new attempt with a good card goes through.
    again = pay(app_client, who.sale.id, "deposit", token, "declined-01")
    assert (again.status_code, again.json()) == (402, response.json())
    other_card = payment_sandbox.token(CARD_SUCCEEDS)
    assert pay(app_client, who.sale.id, "deposit", other_card, "declined-01").status_code == 409
    good = pay(app_client, who.sale.id, "deposit", other_card, "declined-02")
    assert good.status_code == 201, good.text


def test_provider_error_answers_503_and_captures_nothing(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    token = payment_sandbox.token(CARD_PROVIDER_ERROR)
    response = pay(app_client, who.sale.id, "deposit", token, "provider-err-1")
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "payment.provider_error"
    assert _state(db, who.sale.id) == "awaiting_deposit"
    (payment,) = service.payments_for_sale(db, who.sale.id)
    assert payment.state == "failed"
    assert payment_sandbox.captures(payment.reference) == 0
    assert service.amount_paid(db, who.sale.id) == 0


def test_late_answer_leaves_the_payment_pending_until_the_signed_webhook_settles_it(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    token = payment_sandbox.token(CARD_ANSWERS_LATE)
    response = pay(app_client, who.sale.id, "deposit", token, "late-answer-1")
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "pending"
    assert _state(db, who.sale.id) == "awaiting_deposit"
    reference = _payment(db, response.json()["id"]).reference

    # Another attempt while this one is open would risk a double charge: refused.
    other = pay(
        app_client, who.sale.id, "deposit", payment_sandbox.token(CARD_SUCCEEDS), "late-answer-2"
    )
    assert other.status_code == 409
    assert other.json()["code"] == "payment.in_progress"

    authorised = payment_sandbox.inbox.wait_for(reference, "authorization.succeeded")
    assert deliver(app_client, authorised)["state"] == "captured"
    assert _state(db, who.sale.id) == "waiting_for_factory"

    captured = payment_sandbox.inbox.wait_for(reference, "capture.succeeded")
    assert deliver(app_client, captured)["state"] == "captured"  # a repeat changes nothing
    assert deliver(app_client, authorised)["state"] == "captured"
    assert payment_sandbox.captures(reference) == 1
    assert db.scalar(select(func.count(Invoice.id)).where(Invoice.sale_id == who.sale.id)) == 1

    retry = pay(app_client, who.sale.id, "deposit", token, "late-answer-1")
    assert retry.status_code == 201
    assert retry.json()["id"] == response.json()["id"]


def test_retry_with_the_same_key_charges_once(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    first = pay(app_client, who.sale.id, "deposit", token, "same-key-0001")
    second = pay(app_client, who.sale.id, "deposit", token, "same-key-0001")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    (payment,) = service.payments_for_sale(db, who.sale.id)
    assert payment_sandbox.authorisations(payment.reference) == 1
    assert payment_sandbox.captures(payment.reference) == 1
    assert service.amount_paid(db, who.sale.id) == who.sale.deposit_minor


def test_retry_after_a_timeout_finishes_the_same_payment_without_charging_twice(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    token = payment_sandbox.token(CARD_ANSWERS_LATE)
    first = pay(app_client, who.sale.id, "deposit", token, "timeout-retry-1")
    assert first.status_code == 202
    reference = _payment(db, first.json()["id"]).reference
    # The provider has finished by now; the customer's retry (no webhook yet) asks it again
    # with the same provider key, gets the first authorisation back, and captures it.
    payment_sandbox.inbox.wait_for(reference, "authorization.succeeded")
    retry = pay(app_client, who.sale.id, "deposit", token, "timeout-retry-1")
    assert retry.status_code == 201, retry.text
    assert retry.json()["id"] == first.json()["id"]
    for received in payment_sandbox.inbox.for_reference(reference):
        assert deliver(app_client, received)["state"] == "captured"
    assert payment_sandbox.authorisations(reference) == 1
    assert payment_sandbox.captures(reference) == 1
    assert _state(db, who.sale.id) == "waiting_for_factory"


def test_final_payment_pays_the_rest_and_the_two_invoices_add_up_to_the_sale(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    early = pay(app_client, who.sale.id, "final", token, "final-too-early")
    assert early.status_code == 409
    assert early.json()["code"] == "payment.not_due"
    assert pay(app_client, who.sale.id, "deposit", token, "final-dep-1").status_code == 201

    sale = db.get_one(Sale, who.sale.id)
    db.refresh(sale)
    sale.state = "at_dealer"  # the factory's part, done by other tests
    db.commit()
    final = pay(app_client, who.sale.id, "final", token, "final-pay-1")
    assert final.status_code == 201, final.text
    assert final.json()["amount"]["amount_minor"] == sale.total_minor - sale.deposit_minor
    assert _state(db, who.sale.id) == "registering"
    assert service.amount_paid(db, who.sale.id) == sale.total_minor

    advance, rest = service.invoices_for_customer(db, who.customer.id)
    assert (advance.kind, rest.kind) == ("advance", "final")
    assert advance.gross_minor + rest.gross_minor == sale.total_minor
    assert advance.net_minor + rest.net_minor == sale.net_minor
    assert advance.vat_minor + rest.vat_minor == sale.vat_minor
    detail = app_client.get(f"/api/v1/invoices/{rest.id}").json()
    assert len(detail["lines"]) == len(sale.quote_lines) + 1
    assert detail["lines"][-1]["gross"]["amount_minor"] == -sale.deposit_minor
    assert advance.number in detail["lines"][-1]["description"]
    assert rest.sequence == advance.sequence + 1


def test_payments_of_an_order_list_every_attempt(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    pay(app_client, who.sale.id, "deposit", payment_sandbox.token(CARD_DECLINED), "list-0001")
    pay(app_client, who.sale.id, "deposit", payment_sandbox.token(CARD_SUCCEEDS), "list-0002")
    listed = app_client.get(f"/api/v1/sales/{who.sale.id}/payments").json()
    assert [p["state"] for p in listed] == ["failed", "captured"]
    login(app_client, "sales.madrid@caas.example")
    assert len(app_client.get(f"/api/v1/sales/{who.sale.id}/payments").json()) == 2


def test_another_customers_order_is_404_and_a_dealer_may_not_pay(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    owner = buyer(db, settings, clock, country="ES")
    stranger = buyer(db, settings, clock, country="FR")
    token = payment_sandbox.token(CARD_SUCCEEDS)
    login(app_client, stranger.customer.email)
    assert pay(app_client, owner.sale.id, "deposit", token, "stranger-01").status_code == 404
    assert app_client.get(f"/api/v1/sales/{owner.sale.id}/payments").status_code == 404
    login(app_client, "sales.madrid@caas.example")
    assert pay(app_client, owner.sale.id, "deposit", token, "dealer-0001").status_code == 403
    assert service.payments_for_sale(db, owner.sale.id) == []


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({"kind": "deposit", "card_token": "tok_abc123"}, {}, "Idempotency-Key"),
        ({"kind": "rent", "card_token": "tok_abc123"}, {"Idempotency-Key": "bad-kind-1"}, "kind"),
        (
            {"kind": "deposit", "card_token": "4242424242424242"},
            {"Idempotency-Key": "bad-token-1"},
            "card_token",
        ),
    ],
)
def test_bad_payment_input_is_422_naming_the_field(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    body: dict[str, str],
    headers: dict[str, str],
    field: str,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    response = app_client.post(f"/api/v1/sales/{who.sale.id}/payments", json=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert service.payments_for_sale(db, who.sale.id) == []


def test_unknown_token_is_422_on_card_token(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    response = pay(app_client, who.sale.id, "deposit", "tok_doesnotexist", "unknown-tok-1")
    assert response.status_code == 422
    assert response.json()["field"] == "card_token"
    assert _state(db, who.sale.id) == "awaiting_deposit"


def test_webhook_with_a_wrong_or_missing_signature_is_401(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    first = pay(
        app_client, who.sale.id, "deposit", payment_sandbox.token(CARD_ANSWERS_LATE), "sig-test-1"
    )
    payment = _payment(db, first.json()["id"])
    forged_event = Event(
        id="evt_forged",
        type="capture.succeeded",
        created_at=clock.now(),
        authorization=Authorization(
            id="auth_forged",
            status="captured",
            amount_minor=payment.amount_minor,
            captured_minor=payment.amount_minor,
            currency=payment.currency,
            reference=payment.reference,
            card=CardSummary(brand="visa", last4="4242", exp_month=12, exp_year=2040),
            created_at=clock.now(),
        ),
    )
    body = forged_event.model_dump_json().encode()
    url = "/api/v1/webhooks/payments"
    plain = {"Content-Type": "application/json"}
    assert app_client.post(url, content=body, headers=plain).status_code == 401
    forged = {**plain, "X-Caas-Signature": sign(body, "not-the-secret")}
    answer = app_client.post(url, content=body, headers=forged)
    assert answer.status_code == 401
    assert answer.json()["code"] == "webhook.bad_signature"
    stale = {**plain, "X-Caas-Signature": sign(body, WEBHOOK_SECRET, timestamp=1_000_000_000)}
    assert app_client.post(url, content=body, headers=stale).status_code == 401
    assert _payment(db, payment.id).state == "pending"
    assert _state(db, who.sale.id) == "awaiting_deposit"


def test_a_refund_gives_the_money_back_once_and_the_event_repeats_nothing(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    paid = pay(
        app_client, who.sale.id, "deposit", payment_sandbox.token(CARD_SUCCEEDS), "refund-01"
    )
    payment = _payment(db, paid.json()["id"])
    with SandboxProvider.from_settings(settings) as provider:
        service.refund_payment(
            db, payment, amount_minor=None, provider=provider, actor=PROVIDER, now=clock.now()
        )
        assert payment.state == "refunded"
        assert service.amount_paid(db, who.sale.id) == 0
        with pytest.raises(Conflict):
            service.refund_payment(
                db, payment, amount_minor=1, provider=provider, actor=PROVIDER, now=clock.now()
            )
    db.commit()
    refunds = [s for s in payment_sandbox.settlements(payment.reference) if s.kind == "refund"]
    assert [s.amount_minor for s in refunds] == [payment.amount_minor]
    event = payment_sandbox.inbox.wait_for(payment.reference, "refund.succeeded")
    assert deliver(app_client, event)["state"] == "refunded"
    assert _payment(db, payment.id).refunded_minor == payment.amount_minor
