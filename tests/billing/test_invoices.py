"""Invoices: gap-free numbers under concurrency, immutability, the PDF, who may see them."""

from __future__ import annotations

import io
import secrets
import threading

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sqlalchemy import Engine, delete, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from caas.billing import invoices, service
from caas.billing.models import Invoice, InvoiceCounter, InvoiceLine
from caas.core.clock import FixedClock
from caas.core.db import make_session_factory, unit_of_work
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from tests.billing.conftest import Buyer, PaymentSandbox, buyer, login, pay


class RolledBack(Exception):
    pass


def test_invoice_numbers_stay_gap_free_when_many_issue_at_once(engine: Engine) -> None:
    """Separate sessions on the real database take numbers together; one rolls back."""
    factory = make_session_factory(engine)
    series, year, workers = f"T{secrets.token_hex(3).upper()}", 2026, 8
    start = threading.Barrier(workers)
    committed: list[int] = []
    lock = threading.Lock()

    def issue(worker: int) -> None:
        start.wait()
        try:
            with unit_of_work(factory) as session:
                number = invoices.next_sequence(session, series=series, year=year)
                if worker == 3:
                    raise RolledBack  # its number must go back to the series
        except RolledBack:
            return
        with lock:
            committed.append(number)

    threads = [threading.Thread(target=issue, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert sorted(committed) == list(range(1, workers))
        with unit_of_work(factory) as session:
            assert invoices.next_sequence(session, series=series, year=year) == workers
            assert invoices.next_sequence(session, series=series, year=year + 1) == 1
    finally:
        with unit_of_work(factory) as session:
            session.execute(delete(InvoiceCounter).where(InvoiceCounter.series == series))


def _paid(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    sandbox: PaymentSandbox,
    country: str = "ES",
) -> tuple[Buyer, Invoice]:
    who = buyer(db, settings, clock, country=country)
    login(app_client, who.customer.email)
    response = pay(app_client, who.sale.id, "deposit", sandbox.token(CARD_SUCCEEDS), "invoice-01")
    assert response.status_code == 201, response.text
    (invoice,) = service.invoices_for_customer(db, who.customer.id)
    return who, invoice


def test_an_issued_invoice_cannot_be_changed_or_deleted_in_the_database(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    _, invoice = _paid(app_client, db, settings, clock, payment_sandbox)
    for statement in (
        update(Invoice).where(Invoice.id == invoice.id).values(gross_minor=1),
        delete(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id),
    ):
        with pytest.raises(DBAPIError, match="cannot be changed"), db.begin_nested():
            db.execute(statement)
    assert db.scalar(text("SELECT gross_minor FROM invoices WHERE id = :id"), {"id": invoice.id})


def test_invoice_carries_seller_buyer_and_lines_that_add_up(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who, invoice = _paid(app_client, db, settings, clock, payment_sandbox)
    body = app_client.get(f"/api/v1/invoices/{invoice.id}").json()
    assert body["number"] == invoice.number
    assert body["seller"]["name"] == "caas Motors S.L."
    assert body["seller"]["tax_id"] == "ESB87654323"
    assert body["buyer"]["tax_id"] == who.customer.national_id
    assert who.customer.street in body["buyer"]["address"]
    (line,) = body["lines"]
    assert line["vat_rate_percent"] == "21.00"
    assert line["gross"]["amount_minor"] == who.sale.deposit_minor
    assert (
        body["net"]["amount_minor"] + body["vat"]["amount_minor"] == body["gross"]["amount_minor"]
    )
    assert [i["id"] for i in app_client.get("/api/v1/invoices").json()] == [invoice.id]


def test_invoice_pdf_is_in_the_customers_language_and_shows_its_number(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    _, spanish = _paid(app_client, db, settings, clock, payment_sandbox, country="ES")
    response = app_client.get(f"/api/v1/invoices/{spanish.id}/pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    page = PdfReader(io.BytesIO(response.content)).pages[0].extract_text()
    assert spanish.number in page
    assert "Factura de anticipo" in page
    assert "Base imponible" in page
    # Rendered from the row alone: the same bytes every time.
    assert app_client.get(f"/api/v1/invoices/{spanish.id}/pdf").content == response.content

    _, english = _paid(app_client, db, settings, clock, payment_sandbox, country="FR")
    page = PdfReader(io.BytesIO(app_client.get(f"/api/v1/invoices/{english.id}/pdf").content))
    text_en = page.pages[0].extract_text()
    assert english.number in text_en
    assert english.number.startswith("FR-2026-")
    assert "Advance payment invoice" in text_en


def test_another_customers_invoice_is_404_and_operators_see_all(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    _, theirs = _paid(app_client, db, settings, clock, payment_sandbox, country="ES")
    _, mine = _paid(app_client, db, settings, clock, payment_sandbox, country="PT")
    assert app_client.get(f"/api/v1/invoices/{theirs.id}").status_code == 404
    assert app_client.get(f"/api/v1/invoices/{theirs.id}/pdf").status_code == 404
    assert [i["id"] for i in app_client.get("/api/v1/invoices").json()] == [mine.id]

    login(app_client, "operator@caas.example")
    listed = {i["id"] for i in app_client.get("/api/v1/invoices").json()}
    assert {theirs.id, mine.id} <= listed
    assert app_client.get(f"/api/v1/invoices/{theirs.id}/pdf").status_code == 200

    login(app_client, "sales.madrid@caas.example")
    assert app_client.get("/api/v1/invoices").status_code == 403
    assert app_client.get(f"/api/v1/invoices/{theirs.id}").status_code == 404
