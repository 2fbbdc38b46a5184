"""The invoice as a PDF, in the customer's language, rendered from the issued row alone.

The same invoice always gives the same bytes (the document's dates are the invoice's), so the
PDF need not be stored: the row is the record, the PDF its faithful rendering.
"""

from __future__ import annotations

import unicodedata
from decimal import Decimal

from babel.dates import format_date
from babel.numbers import format_decimal
from fpdf import FPDF

from caas.billing.models import Invoice, InvoiceLine

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "advance": "Advance payment invoice",
        "final": "Invoice",
        "option": "Invoice",
        "credit_note": "Credit note",
        "corrects": "Corrects invoice",
        "refunded": "Refunded to the card it was paid with.",
        "number": "Invoice number",
        "date": "Date of issue",
        "order": "Order",
        "seller": "Seller",
        "buyer": "Customer",
        "tax_id": "VAT number",
        "national_id": "National id",
        "description": "Description",
        "net": "Net",
        "vat_rate": "VAT %",
        "vat": "VAT",
        "gross": "Total",
        "total_net": "Taxable base",
        "total_vat": "VAT",
        "total_gross": "Total invoice",
        "paid": "Paid by card. Thank you.",
    },
    "es": {
        "advance": "Factura de anticipo",
        "final": "Factura",
        "option": "Factura",
        "credit_note": "Factura rectificativa (abono)",
        "corrects": "Rectifica la factura",
        "refunded": "Reembolsada en la tarjeta con la que se pagó.",
        "number": "Número de factura",
        "date": "Fecha de expedición",
        "order": "Pedido",
        "seller": "Vendedor",
        "buyer": "Cliente",
        "tax_id": "NIF-IVA",
        "national_id": "DNI/NIE",
        "description": "Concepto",
        "net": "Base",
        "vat_rate": "% IVA",
        "vat": "IVA",
        "gross": "Total",
        "total_net": "Base imponible",
        "total_vat": "Cuota de IVA",
        "total_gross": "Total factura",
        "paid": "Pagada con tarjeta. Gracias.",
    },
}
FALLBACK = "en"

# Column widths of the lines table (mm): description, net, VAT %, VAT, total.
COLUMNS = (82, 28, 16, 26, 28)


# Letters that Unicode does not decompose into a Latin-1 base letter.
_PLAIN = str.maketrans({"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h", "ı": "i"})


def _latin1(text: str) -> str:
    """The PDF's core font knows Latin-1 only: other letters lose their accents, not the page."""
    kept = []
    for ch in text.translate(_PLAIN):
        if ord(ch) < 256:
            kept.append(ch)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if ord(c) < 256)
        kept.append(base or "?")
    return "".join(kept)


def _amount(amount_minor: int, currency: str, language: str) -> str:
    value = Decimal(amount_minor).scaleb(-2)
    return f"{format_decimal(value, format='#,##0.00', locale=language)} {currency}"


def _fit(pdf: FPDF, value: str, width: float) -> None:
    """A long text gets a smaller font rather than running into the next column."""
    size = 9.0
    while size > 5 and pdf.get_string_width(value) > width - 2:
        size -= 0.5
        pdf.set_font_size(size)


def render_invoice_pdf(invoice: Invoice, lines: list[InvoiceLine]) -> bytes:
    language = invoice.language if invoice.language in LABELS else FALLBACK
    words = LABELS[language]

    def text(value: str) -> str:
        return _latin1(value)

    pdf = FPDF(format="A4")
    pdf.set_creation_date(invoice.issued_at)
    pdf.set_title(f"{words[invoice.kind]} {invoice.number}")
    pdf.set_author(invoice.seller_name)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()

    pdf.set_font("helvetica", "B", 18)
    pdf.cell(0, 10, text(words[invoice.kind]), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 10)
    pdf.cell(0, 6, text(f"{words['number']}: {invoice.number}"), new_x="LMARGIN", new_y="NEXT")
    issued = format_date(invoice.issue_date, "long", locale=language)
    pdf.cell(0, 6, text(f"{words['date']}: {issued}"), new_x="LMARGIN", new_y="NEXT")
    if invoice.order_number:
        pdf.cell(
            0, 6, text(f"{words['order']}: {invoice.order_number}"), new_x="LMARGIN", new_y="NEXT"
        )
    if invoice.corrects_number:
        corrects = f"{words['corrects']}: {invoice.corrects_number}"
        pdf.cell(0, 6, text(corrects), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    top = pdf.get_y()
    parties = (
        (words["seller"], f"{invoice.seller_name}\n{words['tax_id']}: {invoice.seller_tax_id}\n"
         f"{invoice.seller_address}"),
        (words["buyer"], f"{invoice.buyer_name}\n{words['national_id']}: "
         f"{invoice.buyer_national_id}\n{invoice.buyer_address}"),
    )  # fmt: skip
    for column, (title, body) in enumerate(parties):
        pdf.set_xy(pdf.l_margin + column * 95, top)
        pdf.set_font("helvetica", "B", 10)
        pdf.multi_cell(90, 5, text(title), new_x="LEFT", new_y="NEXT")
        pdf.set_font("helvetica", "", 10)
        pdf.multi_cell(90, 5, text(body), new_x="LEFT", new_y="NEXT")
    pdf.set_xy(pdf.l_margin, top + 40)

    pdf.set_font("helvetica", "B", 9)
    headings = (words["description"], words["net"], words["vat_rate"], words["vat"], words["gross"])
    for width, heading in zip(COLUMNS, headings, strict=True):
        pdf.cell(width, 7, text(heading), border="B", align="L" if width == COLUMNS[0] else "R")
    pdf.ln()
    pdf.set_font("helvetica", "", 9)
    for line in lines:
        cells = (
            line.description,
            _amount(line.net_minor, invoice.currency, language),
            f"{Decimal(line.vat_rate_bp).scaleb(-2):.2f}",
            _amount(line.vat_minor, invoice.currency, language),
            _amount(line.gross_minor, invoice.currency, language),
        )
        for width, cell in zip(COLUMNS, cells, strict=True):
            _fit(pdf, text(cell), width)
            pdf.cell(width, 6, text(cell), align="L" if width == COLUMNS[0] else "R")
            pdf.set_font_size(9)
        pdf.ln()
    pdf.ln(4)

    for key, amount, style in (
        ("total_net", invoice.net_minor, ""),
        ("total_vat", invoice.vat_minor, ""),
        ("total_gross", invoice.gross_minor, "B"),
    ):
        pdf.set_font("helvetica", style, 10)
        pdf.cell(sum(COLUMNS[:-1]), 6, text(words[key]), align="R")
        pdf.cell(COLUMNS[-1], 6, text(_amount(amount, invoice.currency, language)), align="R")
        pdf.ln()
    pdf.ln(6)
    pdf.set_font("helvetica", "I", 9)
    closing = words["refunded"] if invoice.corrects_number else words["paid"]
    pdf.cell(0, 6, text(closing), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
