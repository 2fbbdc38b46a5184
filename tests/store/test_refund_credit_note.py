"""Captured money the store gives back gets its credit note.

The store captures only once the car has applied what was paid for, and a refusal by the car
releases a hold; captured money meets a rejection only when the two cross (the car rejects an
older version after applying a newer one that carries the same purchase, while its capture
is under way). That case, and a schedule paid up front and cancelled before its window, give
captured money back, each with one credit note."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from caas.billing import service as billing
from caas.billing.invoices import credit_notes_of, invoice_lines, invoice_of_payment
from caas.billing.models import Payment
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store.models import Offer, Purchase
from tests.billing.conftest import PaymentSandbox, login
from tests.store.conftest import Owner, answer, buy, item, offer, run_all_due, run_relay
from tests.store.engine import engine_keys, signing
from tests.store.test_schedules import _create, _occurrence_payments, at, custom, owner

__all__ = ["custom", "engine_keys", "owner", "signing"]


def test_a_refund_of_a_captured_up_front_window_issues_one_credit_note(
    db: Session,
    owner: Owner,
    custom: Offer,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    app_client: TestClient,
) -> None:
    clock.set(at("2026-11-20T12:00"))
    login(app_client, owner.user.email)
    body = {
        "offer_id": custom.id,
        "recurrence": "once",
        "start_date": "2026-12-01",
        "start_time": "00:00",
        "end_date": "2026-12-01",
        "end_time": "24:00",
        "charge": "upfront",
        "card_token": payment_sandbox.token(CARD_SUCCEEDS),
    }
    created = _create(app_client, owner.vehicle.vin, body, "credit-note-once-1")
    run_all_due(settings, sessions, clock, db)
    (payment,) = _occurrence_payments(db, owner)
    assert payment.state == "captured"
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None

    cancelled = app_client.delete(
        f"/api/v1/schedules/{created.json()['id']}", headers={"Idempotency-Key": "cancel-cn-1"}
    )
    assert cancelled.status_code == 200, cancelled.text
    run_all_due(settings, sessions, clock, db)
    run_all_due(settings, sessions, clock, db)

    (note,) = credit_notes_of(db, invoice.id)
    assert note.kind == "credit_note"
    assert (note.corrects_id, note.corrects_number) == (invoice.id, invoice.number)
    assert note.gross_minor == -invoice.gross_minor == -payment.amount_minor
    assert sum(line.gross_minor for line in invoice_lines(db, note.id)) == note.gross_minor


def test_money_captured_as_the_car_rejects_the_delivery_is_refunded_with_a_credit_note(
    db: Session,
    owner: Owner,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    token = payment_sandbox.token(CARD_SUCCEEDS)
    month = offer(db, owner.vehicle, "winter_traction", "window", "1M", net_minor=1_000)
    day = offer(db, owner.vehicle, "power_boost", "window", "1D", net_minor=500)
    first = buy(
        db, owner, [item(month)], token=token, key="crossed-1", settings=settings, clock=clock
    )
    second = buy(
        db, owner, [item(day)], token=token, key="crossed-2", settings=settings, clock=clock
    )
    assert (second.configuration_version or 0) > (first.configuration_version or 0)

    # The car applies the newer version (which carries both purchases): both captures queued.
    answer(db, owner, second.configuration_version or 0, "applied", clock)
    payment = db.get_one(Payment, first.payment_id)
    # The first purchase's capture goes through at the provider...
    with SandboxProvider.from_settings(settings) as provider:
        billing.capture_payment(
            db, payment, provider=provider, actor=billing.PROVIDER, now=clock.now()
        )
    db.commit()
    assert payment.state == "captured"
    # ...while the car's late answer to the older version refuses it.
    answer(
        db, owner, first.configuration_version or 0, "rejected", clock, reason="certificate_expired"
    )
    assert db.get_one(Purchase, first.id).state == "refunded"

    run_relay(settings, sessions, clock, db)
    run_relay(settings, sessions, clock, db)
    payment = db.get_one(Payment, first.payment_id)
    assert (payment.state, payment.refunded_minor) == ("refunded", payment.amount_minor)
    refunds = [s for s in payment_sandbox.settlements(payment.reference) if s.kind == "refund"]
    assert [s.amount_minor for s in refunds] == [1_210]
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None
    (note,) = credit_notes_of(db, invoice.id)
    assert note.gross_minor == -invoice.gross_minor
    assert db.get_one(Purchase, second.id).state == "active"
