"""Payments whose outcome is unknown are settled by asking the provider, never by guessing: a
card that answers too late, a payment the provider never received, a capture never confirmed,
and the sweep that finds what nobody is asking about."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caas.billing import resolve, rules, service
from caas.billing.models import Invoice, Payment
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.history import HistoryEntry
from caas.core.money import Money
from caas.core.outbox import OutboxMessage, pending
from caas.core.settings import Settings
from caas.protocol.payments import CARD_ANSWERS_LATE, CARD_SUCCEEDS
from caas.sales.models import Sale
from caas.worker import build_relay
from tests.billing.conftest import PaymentSandbox, buyer, deliver, login, pay


def _payment(db: Session, payment_id: int) -> Payment:
    db.expire_all()
    return db.get_one(Payment, payment_id)


def _invoices(db: Session, payment_id: int) -> int:
    return db.scalar(select(func.count(Invoice.id)).where(Invoice.payment_id == payment_id)) or 0


def _questions(db: Session, payment_id: int) -> list[OutboxMessage]:
    return [
        message
        for message in pending(db, resolve.RESOLVE_TOPIC)
        if message.payload["payment_id"] == payment_id
    ]


def _run_due(settings: Settings, sessions: sessionmaker[Session], clock: FixedClock) -> int:
    relay = build_relay(settings, sessions, clock)
    handled = 0
    while count := relay.run_once(limit=100):
        handled += count
    return handled


def _history(db: Session, payment_id: int) -> list[tuple[str, str]]:
    return [
        (entry.event, entry.actor_kind)
        for entry in db.scalars(
            select(HistoryEntry)
            .where(HistoryEntry.subject_type == "payment", HistoryEntry.subject_id == payment_id)
            .order_by(HistoryEntry.id)
        )
    ]


def test_a_late_card_is_asked_about_and_the_providers_answer_settles_the_order(
    app_client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    token = payment_sandbox.token(CARD_ANSWERS_LATE)
    response = pay(app_client, who.sale.id, "deposit", token, "resolve-late-1")
    assert response.status_code == 202, response.text
    payment = _payment(db, response.json()["id"])
    (question,) = _questions(db, payment.id)
    assert question.run_after == clock.now() + resolve.FIRST_ASK_AFTER

    # Nothing is asked before its time; then the provider, which has answered by now (its
    # event is not delivered: it may be lost), tells, and the order moves on.
    _run_due(settings, sessions, clock)
    assert _questions(db, payment.id) == [question]
    payment_sandbox.inbox.wait_for(payment.reference, "authorization.succeeded")
    clock.advance(resolve.FIRST_ASK_AFTER)
    _run_due(settings, sessions, clock)
    payment = _payment(db, payment.id)
    assert payment.state == "captured"
    assert (payment.card_brand, payment.card_last4) == ("visa", "0259")
    assert db.get_one(Sale, who.sale.id).state == "waiting_for_factory"
    assert ("payment.authorised", "provider") in _history(db, payment.id)
    assert _invoices(db, payment.id) == 1
    assert not _questions(db, payment.id)

    # Asking again, and the provider's events arriving after all, repeat nothing.
    with SandboxProvider.from_settings(settings) as provider:
        resolve.resolve(db, payment.id, provider=provider, now=clock.now(), attempt=5)
    db.commit()
    for received in payment_sandbox.inbox.for_reference(payment.reference):
        assert deliver(app_client, received)["state"] == "captured"
    assert payment_sandbox.authorisations(payment.reference) == 1
    assert payment_sandbox.captures(payment.reference) == 1
    assert _invoices(db, payment.id) == 1
    assert service.amount_paid(db, who.sale.id) == who.sale.deposit_minor


def test_a_retried_question_while_the_answer_is_still_coming_charges_once(
    app_client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    response = pay(
        app_client,
        who.sale.id,
        "deposit",
        payment_sandbox.token(CARD_ANSWERS_LATE),
        "resolve-twice-1",
    )
    payment = _payment(db, response.json()["id"])
    # Asked at once, the provider is still working on it: not found, asked again later.
    with SandboxProvider.from_settings(settings) as provider:
        resolve.resolve(db, payment.id, provider=provider, now=clock.now())
    db.commit()
    assert _payment(db, payment.id).state == "pending"
    assert {m.payload["attempt"] for m in _questions(db, payment.id)} == {0, 1}

    payment_sandbox.inbox.wait_for(payment.reference, "authorization.succeeded")
    clock.advance(timedelta(minutes=2))
    _run_due(settings, sessions, clock)  # both questions come due: the second finds it settled
    with SandboxProvider.from_settings(settings) as provider:
        resolve.resolve(db, payment.id, provider=provider, now=clock.now(), attempt=2)
    db.commit()
    assert _payment(db, payment.id).state == "captured"
    assert payment_sandbox.captures(payment.reference) == 1
    assert _invoices(db, payment.id) == 1
    assert [event for event, _ in _history(db, payment.id)].count("payment.captured") == 1


def test_a_payment_the_provider_never_received_fails_after_the_grace_period(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    # The request died after its commit, before the provider heard of it.
    payment = service.begin_sale_payment(
        db,
        user=who.user,
        sale_id=who.sale.id,
        kind="deposit",
        card_token=token,
        idempotency_key="never-sent-1",
        now=clock.now(),
    )
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        clock.advance(resolve.NEVER_RECEIVED_AFTER - timedelta(seconds=1))
        resolve.resolve(db, payment.id, provider=provider, now=clock.now())
        db.commit()
        assert _payment(db, payment.id).state == "pending"  # not yet: it may still come
        clock.advance(timedelta(seconds=1))
        resolve.resolve(db, payment.id, provider=provider, now=clock.now(), attempt=1)
        db.commit()
    payment = _payment(db, payment.id)
    assert (payment.state, payment.failure_code) == ("failed", "provider.never_received")
    assert ("payment.failed", "system") in _history(db, payment.id)
    assert payment_sandbox.authorisations(payment.reference) == 0
    # The order is free to be paid again.
    again = pay(app_client, who.sale.id, "deposit", token, "never-sent-2")
    assert again.status_code == 201, again.text


def test_the_sweep_asks_about_a_stuck_capture_and_the_sale_payment_is_captured_once(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = service.begin_sale_payment(
        db,
        user=who.user,
        sale_id=who.sale.id,
        kind="deposit",
        card_token=token,
        idempotency_key="stuck-capture-1",
        now=clock.now(),
    )
    db.commit()
    # Authorised, then the worker died before the capture: nobody is asking about it.
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.authorise_payment(
            db,
            payment,
            payment_method=token,
            provider=provider,
            actor=service.PROVIDER,
            now=clock.now(),
        )
    db.commit()
    assert payment.state == "authorised"
    assert resolve.stuck_payments(db, now=clock.now()) == []  # not stuck yet

    clock.advance(resolve.STUCK_AFTER)
    assert resolve.sweep(db, now=clock.now()) == 1
    assert resolve.sweep(db, now=clock.now()) == 0  # already being asked about
    db.commit()
    clock.advance(resolve.FIRST_ASK_AFTER)
    _run_due(settings, sessions, clock)
    assert _payment(db, payment.id).state == "captured"
    assert payment_sandbox.captures(payment.reference) == 1
    assert _invoices(db, payment.id) == 1
    assert db.get_one(Sale, who.sale.id).state == "waiting_for_factory"
    # The sweep keeps itself going.
    assert pending(db, resolve.SWEEP_TOPIC)


def test_a_store_payment_left_authorised_waits_for_the_store_not_the_resolver(
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    from tests.billing.test_store_payments import _begin

    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = _begin(db, who.customer.id, token, key="resolver-store-1")
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.authorise_payment(
            db,
            payment,
            payment_method=token,
            provider=provider,
            actor=service.PROVIDER,
            now=clock.now(),
        )
        db.commit()
        clock.advance(timedelta(hours=1))
        assert resolve.stuck_payments(db, now=clock.now()) == []
        resolve.resolve(db, payment.id, provider=provider, now=clock.now())
    db.commit()
    assert _payment(db, payment.id).state == "authorised"
    assert payment_sandbox.captures(payment.reference) == 0


def test_a_hold_made_after_the_payment_was_given_up_is_released(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = service.begin_sale_payment(
        db,
        user=who.user,
        sale_id=who.sale.id,
        kind="deposit",
        card_token=token,
        idempotency_key="given-up-1",
        now=clock.now(),
    )
    db.commit()
    clock.advance(resolve.NEVER_RECEIVED_AFTER)
    with SandboxProvider.from_settings(settings) as provider:
        resolve.resolve(db, payment.id, provider=provider, now=clock.now())
        db.commit()
        assert _payment(db, payment.id).failure_code == "provider.never_received"
        # The request reaches the provider after all, much later: money held for nothing.
        held = provider.authorise(
            Money(payment.amount_minor, payment.currency),
            token,
            rules.provider_key(payment.reference, "authorise"),
            payment.reference,
        )
    event = payment_sandbox.inbox.wait_for(payment.reference, "authorization.succeeded")
    assert deliver(app_client, event)["state"] == "failed"
    assert payment_sandbox.sandbox.authorizations[held.provider_ref or ""].status == "voided"
    assert ("payment.late_hold_released", "provider") in _history(db, payment.id)
    assert payment_sandbox.captures(payment.reference) == 0


def test_the_provider_tells_what_became_of_a_reference(
    settings: Settings, payment_sandbox: PaymentSandbox
) -> None:
    with SandboxProvider.from_settings(settings) as provider:
        assert provider.lookup("pay_never_sent") is None
        held = provider.authorise(
            Money(1_000, "EUR"), payment_sandbox.token(CARD_SUCCEEDS), "lookup-1", "pay_lookup_1"
        )
        assert held.provider_ref is not None
        provider.capture(held.provider_ref, Money(1_000, "EUR"), "lookup-1-capture")
        provider.refund(held.provider_ref, Money(300, "EUR"), "lookup-1-refund")
        found = provider.lookup("pay_lookup_1")
    assert found is not None
    assert (found.id, found.status, found.captured_minor, found.refunded_minor) == (
        held.provider_ref,
        "captured",
        1_000,
        300,
    )
    # Behind the secret key like every other call.
    assert (
        httpx.get(
            f"{payment_sandbox.url}/v1/authorizations", params={"reference": "pay_lookup_1"}
        ).status_code
        == 401
    )


def test_the_worker_starts_the_sweep_once_per_period(
    db: Session, sessions: sessionmaker[Session], clock: FixedClock
) -> None:
    resolve.start_sweeping(sessions, clock)
    resolve.start_sweeping(sessions, clock)
    (queued,) = pending(db, resolve.SWEEP_TOPIC)
    assert queued.run_after == clock.now()
    resolve.sweep(db, now=clock.now())
    runs = pending(db, resolve.SWEEP_TOPIC)
    assert [run.run_after for run in runs] == [clock.now(), clock.now() + resolve.SWEEP_EVERY]


def test_a_capture_left_unconfirmed_is_asked_about_and_finished_once(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = service.begin_sale_payment(
        db,
        user=who.user,
        sale_id=who.sale.id,
        kind="deposit",
        card_token=token,
        idempotency_key="capture-unconfirmed-1",
        now=clock.now(),
    )
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.authorise_payment(
            db,
            payment,
            payment_method=token,
            provider=provider,
            actor=service.PROVIDER,
            now=clock.now(),
        )
    # The capture's call never gets through: the payment stays authorised, and is asked about.
    with SandboxProvider("http://127.0.0.1:9", "unused", timeout_seconds=0.5) as unreachable:
        payment = service.capture_payment(
            db, payment, provider=unreachable, actor=service.PROVIDER, now=clock.now()
        )
    db.commit()
    assert payment.state == "authorised"
    (question,) = _questions(db, payment.id)
    assert question.run_after == clock.now() + resolve.FIRST_ASK_AFTER

    clock.advance(resolve.FIRST_ASK_AFTER)
    _run_due(settings, sessions, clock)
    assert _payment(db, payment.id).state == "captured"
    assert payment_sandbox.captures(payment.reference) == 1
    assert _invoices(db, payment.id) == 1
    assert db.get_one(Sale, who.sale.id).state == "waiting_for_factory"
