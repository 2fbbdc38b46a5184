"""Issuing invoices: gap-free numbers per series and year, seller and buyer, lines and totals.

An invoice is written once, in the transaction of the payment it documents, and never changed
(the database refuses updates and deletes of issued invoices). Its number comes from a counter
row per (series, year) locked until that transaction ends, so concurrent issuers queue up and a
rolled-back issue gives its number back: the series has no gaps and no duplicates.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from caas.billing import rules
from caas.billing.models import Invoice, InvoiceCounter, InvoiceLine, Payment
from caas.catalog import service as catalog
from caas.catalog.models import Country
from caas.sales.models import Customer, Sale


def next_sequence(session: Session, *, series: str, year: int) -> int:
    """The next number of `series` in `year`, reserved until the caller's transaction ends.

    One statement: the counter row is created at 1 or moved up by one, and the row lock this
    takes is held until commit or rollback, so concurrent issuers queue up behind it and a
    rolled-back issue gives its number back (no gaps, no duplicates)."""
    counted = insert(InvoiceCounter).values(series=series, year=year, last_number=1)
    number = session.execute(
        counted.on_conflict_do_update(
            index_elements=["series", "year"],
            set_={"last_number": InvoiceCounter.last_number + 1},
        ).returning(InvoiceCounter.last_number)
    ).scalar_one()
    return int(number)


def _buyer_address(session: Session, customer: Customer, issuing: Country) -> str:
    """The buyer's postal address; their country read only when it is not the issuing one."""
    if issuing.code == customer.country:
        country = issuing
    else:
        country = catalog.get_country(session, customer.country)
    return f"{customer.street}\n{customer.postal_code} {customer.city}\n{country.name}"


def issue(
    session: Session,
    *,
    kind: str,
    customer: Customer,
    country: str,
    lines: list[rules.LineDraft],
    now: datetime,
    sale: Sale | None = None,
    payment: Payment | None = None,
    corrects: Invoice | None = None,
) -> Invoice:
    """Number and write an invoice from its lines; the totals are the sums of the lines.

    A credit note (`corrects` the invoice it refunds) is numbered in the country's credit
    note series."""
    if not lines:
        raise ValueError("an invoice needs at least one line")
    issuing = catalog.get_country(session, country)
    series = issuing.invoice_series
    if corrects is not None:
        series = rules.credit_note_series(series)
    seller = rules.SELLERS[country]
    day = rules.issue_date(now, country)
    sequence = next_sequence(session, series=series, year=day.year)
    summed = rules.totals(lines)
    invoice = Invoice(
        number=rules.invoice_number(series, day.year, sequence),
        series=series,
        year=day.year,
        sequence=sequence,
        kind=kind,
        customer_id=customer.id,
        sale_id=sale.id if sale else None,
        payment_id=payment.id if payment else None,
        language=customer.language,
        currency=_currency(payment, sale, corrects),
        issued_at=now,
        issue_date=day,
        seller_name=seller.name,
        seller_tax_id=seller.tax_id,
        seller_address=seller.address,
        buyer_name=customer.full_name,
        buyer_national_id=customer.national_id,
        buyer_address=_buyer_address(session, customer, issuing),
        order_number=sale.number if sale else None,
        corrects_id=corrects.id if corrects else None,
        corrects_number=corrects.number if corrects else None,
        net_minor=summed.net_minor,
        vat_minor=summed.vat_minor,
        gross_minor=summed.gross_minor,
    )
    session.add(invoice)
    session.flush()
    session.add_all(
        InvoiceLine(
            invoice_id=invoice.id,
            position=position,
            description=line.description,
            net_minor=line.net_minor,
            vat_rate_bp=line.vat_rate_bp,
            vat_minor=line.vat_minor,
            gross_minor=line.gross_minor,
        )
        for position, line in enumerate(lines, start=1)
    )
    session.flush()
    return invoice


def _currency(payment: Payment | None, sale: Sale | None, corrects: Invoice | None) -> str:
    for source in (payment, corrects, sale):
        if source is not None:
            return source.currency
    return "EUR"


def _advances_invoiced(session: Session, sale_id: int) -> list[rules.InvoicedAdvance]:
    advances = session.scalars(
        select(Invoice)
        .where(Invoice.sale_id == sale_id, Invoice.kind == "advance")
        .order_by(Invoice.id)
    )
    return [
        rules.InvoicedAdvance(
            invoice_number=advance.number,
            net_minor=advance.net_minor,
            vat_minor=advance.vat_minor,
            vat_rate_bp=_single_rate(session, advance.id),
        )
        for advance in advances
    ]


def _single_rate(session: Session, invoice_id: int) -> int:
    rates = set(
        session.scalars(select(InvoiceLine.vat_rate_bp).where(InvoiceLine.invoice_id == invoice_id))
    )
    if len(rates) != 1:
        raise ValueError(f"advance invoice {invoice_id} has more than one VAT rate")
    return rates.pop()


def issue_for_sale_payment(
    session: Session, *, payment: Payment, sale: Sale, customer: Customer, now: datetime
) -> Invoice:
    """The invoice of a captured deposit (advance) or final payment of a sale."""
    kind = rules.INVOICE_KIND[payment.kind]
    if kind == "advance":
        lines = rules.advance_lines(
            order_number=sale.number,
            gross_minor=payment.amount_minor,
            vat_rate_bp=sale.vat_rate_bp,
            language=customer.language,
        )
    else:
        lines = rules.final_lines(
            sale_lines=[(line["description"], int(line["net_minor"])) for line in sale.quote_lines],
            vat_rate_bp=sale.vat_rate_bp,
            advances=_advances_invoiced(session, sale.id),
            language=customer.language,
        )
        due = rules.totals(lines).gross_minor
        if due != payment.amount_minor:
            # The final payment is the total less what was paid; anything else is a bug.
            raise ValueError(
                f"final invoice of {sale.number} is {due}, the payment {payment.amount_minor}"
            )
    return issue(
        session,
        kind=kind,
        customer=customer,
        country=sale.country,
        lines=lines,
        now=now,
        sale=sale,
        payment=payment,
    )


def store_lines(payment: Payment) -> list[rules.LineDraft]:
    """The lines of a store payment's invoice, as priced when the payment began."""
    if payment.invoice_lines is None or payment.invoice_country is None:
        raise ValueError(f"payment {payment.id} has no invoice lines")
    return [
        rules.LineDraft(
            description=str(line["description"]),
            net_minor=int(line["net_minor"]),
            vat_rate_bp=int(line["vat_rate_bp"]),
            vat_minor=int(line["vat_minor"]),
        )
        for line in payment.invoice_lines
    ]


def issue_for_store_payment(
    session: Session, *, payment: Payment, customer: Customer, now: datetime
) -> Invoice:
    """The invoice of a captured store payment: the lines priced when it began."""
    lines = store_lines(payment)
    if rules.totals(lines).gross_minor != payment.amount_minor:
        raise ValueError(f"payment {payment.id}: its lines do not add up to its amount")
    assert payment.invoice_country is not None  # store_lines checked it
    return issue(
        session,
        kind="option",
        customer=customer,
        country=payment.invoice_country,
        lines=lines,
        now=now,
        payment=payment,
    )


def invoice_lines(session: Session, invoice_id: int) -> list[InvoiceLine]:
    return list(
        session.scalars(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.position)
        )
    )


def invoice_of_payment(session: Session, payment_id: int) -> Invoice | None:
    return session.scalars(select(Invoice).where(Invoice.payment_id == payment_id)).first()


def _drafts(lines: list[InvoiceLine]) -> list[rules.LineDraft]:
    return [
        rules.LineDraft(line.description, line.net_minor, line.vat_rate_bp, line.vat_minor)
        for line in lines
    ]


def issue_credit_note(
    session: Session,
    *,
    payment: Payment,
    refunded_before_minor: int,
    refunded_now_minor: int,
    now: datetime,
) -> Invoice | None:
    """The credit note of a refund of a captured payment: negative lines, in proportion to
    the refund, referencing the payment's invoice (None when the payment has none)."""
    invoice = invoice_of_payment(session, payment.id)
    if invoice is None:
        return None
    customer = session.get_one(Customer, invoice.customer_id)
    sale = session.get_one(Sale, invoice.sale_id) if invoice.sale_id is not None else None
    country = payment.invoice_country or (sale.country if sale else customer.country)
    lines = rules.credit_lines(
        _drafts(invoice_lines(session, invoice.id)),
        refunded_before_minor=refunded_before_minor,
        refunded_now_minor=refunded_now_minor,
        language=invoice.language,
    )
    return issue(
        session,
        kind=rules.CREDIT_NOTE_KIND,
        customer=customer,
        country=country,
        lines=lines,
        now=now,
        sale=sale,
        corrects=invoice,
    )


def credit_notes_of(session: Session, invoice_id: int) -> list[Invoice]:
    """The credit notes that correct an invoice, oldest first."""
    return list(
        session.scalars(
            select(Invoice).where(Invoice.corrects_id == invoice_id).order_by(Invoice.id)
        )
    )
