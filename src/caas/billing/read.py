"""Turning payments and invoices into their API shapes (kept apart so the routes stay thin)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from caas.billing import invoices
from caas.billing.models import Invoice, Payment
from caas.billing.schemas import (
    InvoiceLineRead,
    InvoiceRead,
    InvoiceSummary,
    PartyRead,
    PaymentRead,
)
from caas.core.money import Money
from caas.core.schemas import MoneyRead


def payment_read(session: Session, payment: Payment, locale: str) -> PaymentRead:
    invoice = invoices.invoice_of_payment(session, payment.id)
    return PaymentRead(
        id=payment.id,
        sale_id=payment.sale_id,
        kind=payment.kind,
        state=payment.state,
        amount=MoneyRead.of(Money(payment.amount_minor, payment.currency), locale),
        refunded=MoneyRead.of(Money(payment.refunded_minor, payment.currency), locale),
        card_brand=payment.card_brand,
        card_last4=payment.card_last4,
        failure_code=payment.failure_code,
        failure_reason=payment.failure_reason,
        invoice_id=invoice.id if invoice else None,
        invoice_number=invoice.number if invoice else None,
        created_at=payment.created_at,
        captured_at=payment.captured_at,
    )


def _money(amount_minor: int, invoice: Invoice, locale: str) -> MoneyRead:
    return MoneyRead.of(Money(amount_minor, invoice.currency), locale)


def invoice_summary(invoice: Invoice, locale: str) -> InvoiceSummary:
    return InvoiceSummary(
        id=invoice.id,
        number=invoice.number,
        kind=invoice.kind,
        corrects_number=invoice.corrects_number,
        issue_date=invoice.issue_date,
        order_number=invoice.order_number,
        gross=_money(invoice.gross_minor, invoice, locale),
        pdf_url=f"/api/v1/invoices/{invoice.id}/pdf",
    )


def invoice_read(session: Session, invoice: Invoice, locale: str) -> InvoiceRead:
    summary = invoice_summary(invoice, locale)
    return InvoiceRead(
        **summary.model_dump(),
        issued_at=invoice.issued_at,
        language=invoice.language,
        sale_id=invoice.sale_id,
        payment_id=invoice.payment_id,
        seller=PartyRead(
            name=invoice.seller_name, tax_id=invoice.seller_tax_id, address=invoice.seller_address
        ),
        buyer=PartyRead(
            name=invoice.buyer_name,
            tax_id=invoice.buyer_national_id,
            address=invoice.buyer_address,
        ),
        lines=[
            InvoiceLineRead(
                position=line.position,
                description=line.description,
                net=_money(line.net_minor, invoice, locale),
                vat_rate_percent=f"{line.vat_rate_bp / 100:.2f}",
                vat=_money(line.vat_minor, invoice, locale),
                gross=_money(line.gross_minor, invoice, locale),
            )
            for line in invoices.invoice_lines(session, invoice.id)
        ],
        net=_money(invoice.net_minor, invoice, locale),
        vat=_money(invoice.vat_minor, invoice, locale),
    )
