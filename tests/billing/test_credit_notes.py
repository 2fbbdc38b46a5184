"""Credit notes: every refund of captured money gets one, numbered in its own series,
referencing the invoice, adding up, immutable, in the customer's file and as a PDF."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pypdf import PdfReader
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from caas.billing import rules, service
from caas.billing.invoices import credit_notes_of, invoice_lines, invoice_of_payment
from caas.billing.models import Payment
from caas.billing.pdf import render_invoice_pdf
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from caas.sales.models import Customer
from tests.billing.conftest import PaymentSandbox, buyer, deliver, login

ACTOR = Actor(kind="operator", label="test")


def _captured_store_payment(
    db: Session, settings: Settings, clock: FixedClock, sandbox: PaymentSandbox, key: str
) -> Payment:
    who = buyer(db, settings, clock)
    token = sandbox.token(CARD_SUCCEEDS)
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
        idempotency_key=key,
        actor=ACTOR,
        now=clock.now(),
    )
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.authorise_payment(
            db, payment, payment_method=token, provider=provider, actor=ACTOR, now=clock.now()
        )
        payment = service.capture_payment(
            db, payment, provider=provider, actor=ACTOR, now=clock.now()
        )
    db.commit()
    assert payment.state == "captured"
    return payment


def _refund(db: Session, settings: Settings, payment: Payment, amount: int | None) -> Payment:
    with SandboxProvider.from_settings(settings) as provider:
        return service.refund_payment(
            db, payment, amount_minor=amount, provider=provider, actor=ACTOR, now=FixedClock().now()
        )


def test_a_full_refund_issues_a_credit_note_that_cancels_the_invoice(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    payment = _captured_store_payment(db, settings, clock, payment_sandbox, "credit-full-0001")
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None
    _refund(db, settings, payment, None)
    db.commit()
    [note] = credit_notes_of(db, invoice.id)
    series, year, _ = rules.parse_invoice_number(note.number)
    assert (note.kind, series, year) == ("credit_note", "RES", invoice.year)
    assert (note.corrects_id, note.corrects_number) == (invoice.id, invoice.number)
    assert (note.customer_id, note.currency) == (invoice.customer_id, invoice.currency)
    assert (note.net_minor, note.vat_minor, note.gross_minor) == (
        -invoice.net_minor,
        -invoice.vat_minor,
        -invoice.gross_minor,
    )
    lines = invoice_lines(db, note.id)
    assert [(line.net_minor, line.vat_minor) for line in lines] == [
        (-line.net_minor, -line.vat_minor) for line in invoice_lines(db, invoice.id)
    ]
    assert [line.description for line in lines] == [
        "Abono: Winter traction, 1 month",
        "Abono: Power boost, 1 day",
    ]


def test_a_partial_refund_gets_a_partial_note_and_the_rest_completes_it(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    payment = _captured_store_payment(db, settings, clock, payment_sandbox, "credit-part-0001")
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None
    _refund(db, settings, payment, 1_001)
    db.commit()
    [first] = credit_notes_of(db, invoice.id)
    assert first.gross_minor == -1_001
    assert first.net_minor + first.vat_minor == first.gross_minor
    assert sum(line.gross_minor for line in invoice_lines(db, first.id)) == -1_001
    _refund(db, settings, payment, None)
    db.commit()
    first_again, second = credit_notes_of(db, invoice.id)
    assert first_again.id == first.id
    assert second.gross_minor == -(invoice.gross_minor - 1_001)
    # Consecutive numbers in the series, and together they cancel the invoice exactly.
    assert rules.parse_invoice_number(second.number)[2] == (
        rules.parse_invoice_number(first.number)[2] + 1
    )
    assert first.net_minor + second.net_minor == -invoice.net_minor
    assert first.vat_minor + second.vat_minor == -invoice.vat_minor


def test_a_retried_refund_and_the_providers_event_issue_no_second_note(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    payment = _captured_store_payment(db, settings, clock, payment_sandbox, "credit-retry-001")
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None
    payment_id = payment.id
    # The provider refunded, then our transaction was lost: the retry repeats the same call.
    _refund(db, settings, payment, 500)
    db.rollback()
    payment = db.get_one(Payment, payment_id)
    _refund(db, settings, payment, 500)
    db.commit()
    event = payment_sandbox.inbox.wait_for(payment.reference, "refund.succeeded")
    deliver(app_client, event)
    db.expire_all()
    refunds = [s for s in payment_sandbox.settlements(payment.reference) if s.kind == "refund"]
    assert [s.amount_minor for s in refunds] == [500]
    assert [note.gross_minor for note in credit_notes_of(db, invoice.id)] == [-500]
    assert db.get_one(Payment, payment_id).refunded_minor == 500


def test_a_credit_note_is_immutable_like_an_invoice(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    payment = _captured_store_payment(db, settings, clock, payment_sandbox, "credit-immut-001")
    _refund(db, settings, payment, 100)
    db.commit()
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None
    [note] = credit_notes_of(db, invoice.id)
    with pytest.raises(DBAPIError, match="cannot be changed"):
        db.execute(text("UPDATE invoices SET gross_minor = 0 WHERE id = :id"), {"id": note.id})
    db.rollback()


def test_the_credit_note_renders_and_sits_in_the_owners_file_only(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    payment = _captured_store_payment(db, settings, clock, payment_sandbox, "credit-file-0001")
    _refund(db, settings, payment, 700)
    db.commit()
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None
    [note] = credit_notes_of(db, invoice.id)
    pdf_text = _pdf_text(render_invoice_pdf(note, invoice_lines(db, note.id)))
    assert note.number in pdf_text
    assert invoice.number in pdf_text
    assert "Factura rectificativa" in pdf_text

    email = db.scalar(select(Customer.email).where(Customer.id == note.customer_id))
    assert email is not None
    login(app_client, email)
    listed = app_client.get("/api/v1/me/file").json()["invoices"]
    by_number = {entry["number"]: entry for entry in listed}
    assert by_number[note.number]["kind"] == "credit_note"
    assert by_number[note.number]["corrects_number"] == invoice.number
    download = app_client.get(by_number[note.number]["pdf_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/pdf"
    page = app_client.get("/portal/file")
    assert page.status_code == 200
    assert note.number in page.text and "Factura rectificativa (abono)" in page.text

    other = buyer(db, settings, clock, country="FR")
    app_client.cookies.clear()
    login(app_client, other.customer.email)
    assert app_client.get(f"/api/v1/invoices/{note.id}/pdf").status_code == 404


def _pdf_text(document: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(document)).pages)


@given(
    grosses=st.lists(st.integers(min_value=1, max_value=500_000), min_size=1, max_size=6),
    rate=st.sampled_from([1900, 2000, 2100, 2200, 2300]),
    cuts=st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=4),
)
def test_property_credit_notes_add_up_and_together_cancel_the_invoice(
    grosses: list[int], rate: int, cuts: list[int]
) -> None:
    lines = [rules.priced_line(f"line {i}", net, rate) for i, net in enumerate(grosses)]
    total = rules.totals(lines).gross_minor
    refunded = 0
    notes = []
    for cut in cuts:
        amount = min(cut, total - refunded)
        if amount <= 0:
            break
        note = rules.credit_lines(
            lines, refunded_before_minor=refunded, refunded_now_minor=amount, language="en"
        )
        assert rules.totals(note).gross_minor == -amount
        notes.append(note)
        refunded += amount
    if refunded < total:
        notes.append(
            rules.credit_lines(
                lines,
                refunded_before_minor=refunded,
                refunded_now_minor=total - refunded,
                language="en",
            )
        )
    every = [line for note in notes for line in note]
    assert rules.totals(every).net_minor == -rules.totals(lines).net_minor
    assert rules.totals(every).vat_minor == -rules.totals(lines).vat_minor
