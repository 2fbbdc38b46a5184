"""The invoice PDF drawn from an invoice row alone, without a database."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

from pypdf import PdfReader

from caas.billing import rules
from caas.billing.models import Invoice, InvoiceLine
from caas.billing.pdf import render_invoice_pdf


def _invoice(language: str, buyer: str) -> tuple[Invoice, list[InvoiceLine]]:
    drafts = rules.final_lines(
        sale_lines=[("Aura base platform", 2_900_000), ("Rear-seat entertainment", 80_000)],
        vat_rate_bp=2000,
        advances=[rules.InvoicedAdvance("FR-2026-000001", 298_000, 59_600, 2000)],
        language=language,
    )
    summed = rules.totals(drafts)
    invoice = Invoice(
        id=1,
        number="FR-2026-000002",
        series="FR",
        year=2026,
        sequence=2,
        kind="final",
        customer_id=1,
        language=language,
        currency="EUR",
        issued_at=datetime(2026, 1, 15, 9, tzinfo=UTC),
        issue_date=date(2026, 1, 15),
        seller_name="caas Motors S.L.",
        seller_tax_id=rules.SELLERS["FR"].tax_id,
        seller_address=rules.SELLERS["FR"].address,
        buyer_name=buyer,
        buyer_national_id="295109912611193",
        buyer_address="3 rue de la République\n69003 Lyon\nFrance",
        order_number="S2026-000007",
        net_minor=summed.net_minor,
        vat_minor=summed.vat_minor,
        gross_minor=summed.gross_minor,
    )
    lines = [
        InvoiceLine(
            position=position,
            description=draft.description,
            net_minor=draft.net_minor,
            vat_rate_bp=draft.vat_rate_bp,
            vat_minor=draft.vat_minor,
            gross_minor=draft.gross_minor,
        )
        for position, draft in enumerate(drafts, start=1)
    ]
    return invoice, lines


def test_a_language_without_labels_falls_back_to_english_and_names_survive() -> None:
    invoice, lines = _invoice("fr", "Łukasz Żółć")
    document = render_invoice_pdf(invoice, lines)
    text = PdfReader(io.BytesIO(document)).pages[0].extract_text()
    assert "Invoice number: FR-2026-000002" in text
    assert "Lukasz Zólc" in text  # letters the PDF font lacks lose their accent, not the page
    assert "République" in text
    assert "Less: advance payment invoiced in FR-2026-000001" in text
    assert render_invoice_pdf(invoice, lines) == document
