"""Captured money the store gives back gets its credit note.

The store never captures before the car has applied what was paid for: every refusal by the
car (`rejected`, or silence past the deadline) releases a hold, so no money is captured when
a car rejects a delivery. The store's one path that gives back captured money is a schedule
paid up front and cancelled before its window (the occurrence's refund): that is the path
tested here."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from caas.billing.invoices import credit_notes_of, invoice_lines, invoice_of_payment
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store.models import Offer
from tests.billing.conftest import PaymentSandbox, login
from tests.store.conftest import Owner, run_all_due
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
