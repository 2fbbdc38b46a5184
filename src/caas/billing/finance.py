"""The maker's finance views: revenue by feature, country and month, refunds, failed payments,
and the invoices and the ledger as CSV, read in sets and streamed.

Revenue is what the invoices say, net of VAT: each invoice line counts in the month of its
issue date (in the seller's country), a credit note's lines subtract, and a chargeback
(`ledger_entries`, kind `chargeback`) subtracts its net share (the charged-back amount in the
proportion of the payment's invoice's net to gross) in the month it was posted (UTC), as the
feature `chargebacks`. A line's feature is the ledger's: `vehicle sale` for an order's
invoices, the option's code when a store purchase priced the line, else the line's text
(renewals, occurrences, metered usage). Amounts are never summed across currencies.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from babel.numbers import get_currency_precision
from sqlalchemy import BigInteger, ColumnElement, Numeric, Select, case, cast, func, literal, select
from sqlalchemy.orm import Session, aliased

from caas.billing import ledger, rules
from caas.billing.models import Invoice, InvoiceLine, LedgerEntry, Payment
from caas.catalog.models import Country
from caas.core.errors import InvalidInput
from caas.core.history import HistoryEntry
from caas.sales.models import Customer, Sale

Group = Literal["feature", "country", "month"]
GROUPS: tuple[Group, ...] = ("feature", "country", "month")
VEHICLE_SALE = ledger.SALE_REVENUE.removeprefix("revenue:")
CHARGEBACKS = ledger.CHARGEBACKS
CREDIT_NOTE = rules.CREDIT_NOTE_KIND
BATCH = 5_000  # rows fetched from the server-side cursor, and written, at a time


@dataclass(frozen=True)
class FinanceFilter:
    """Which money to show: from `start` to `end` (both days included; a missing end is open),
    in one country and one currency when given."""

    start: date | None = None
    end: date | None = None
    country: str | None = None
    currency: str | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise InvalidInput(
                "the end of the range is before its start", field="to", code="finance.bad_range"
            )

    def days(self, column: Any) -> list[ColumnElement[bool]]:
        """The range on a column of days."""
        conditions = []
        if self.start is not None:
            conditions.append(column >= self.start)
        if self.end is not None:
            conditions.append(column <= self.end)
        return conditions

    def moments(self, column: Any) -> list[ColumnElement[bool]]:
        """The range on a column of instants: the days in UTC."""
        conditions = []
        if self.start is not None:
            conditions.append(column >= datetime.combine(self.start, time(), UTC))
        if self.end is not None:
            conditions.append(column < datetime.combine(self.end + timedelta(days=1), time(), UTC))
        return conditions

    def place(self, country: Any, currency: Any) -> list[ColumnElement[bool]]:
        conditions = []
        if self.country is not None:
            conditions.append(country == self.country)
        if self.currency is not None:
            conditions.append(currency == self.currency)
        return conditions


def decimal_text(amount_minor: int, currency: str) -> str:
    """An amount as the decimal the currency writes ("12.34" for 1234 EUR), never a float."""
    return str(Decimal(amount_minor).scaleb(-get_currency_precision(currency)))


# --- revenue -------------------------------------------------------------------------------


def _original_description(kind: Any, description: Any) -> ColumnElement[str]:
    """The text of the invoice line a credit note line corrects ("Refund: X" -> "X")."""
    prefixes = sorted({text.split("{description}")[0] for text in rules._CREDIT.values()})
    whens = [
        (
            (kind == CREDIT_NOTE) & (func.left(description, len(prefix)) == prefix),
            func.substr(description, len(prefix) + 1),
        )
        for prefix in prefixes
    ]
    return case(*whens, else_=description)


def _revenue_lines(filters: FinanceFilter) -> Any:
    """Every amount that makes revenue: (month, country, currency, feature, net_minor)."""
    # Imported here: the store imports billing, not the other way round.
    from caas.store.models import Purchase, PurchaseLine

    base = aliased(Invoice, name="base")  # the invoice itself, or the one a note corrects
    original = _original_description(Invoice.kind, InvoiceLine.description)
    code = (
        select(PurchaseLine.code)
        .join(Purchase, Purchase.id == PurchaseLine.purchase_id)
        .where(Purchase.payment_id == base.payment_id, PurchaseLine.description == original)
        .limit(1)
        .scalar_subquery()
    )
    feature = case((base.sale_id.is_not(None), VEHICLE_SALE), else_=func.coalesce(code, original))
    invoiced = (
        select(
            func.to_char(Invoice.issue_date, "YYYY-MM").label("month"),
            Country.code.label("country"),
            Invoice.currency.label("currency"),
            feature.label("feature"),
            InvoiceLine.net_minor.label("net_minor"),
        )
        .select_from(Invoice)
        .join(InvoiceLine, InvoiceLine.invoice_id == Invoice.id)
        .join(base, base.id == func.coalesce(Invoice.corrects_id, Invoice.id))
        .join(Country, Country.invoice_series == base.series)
        .where(*filters.days(Invoice.issue_date), *filters.place(Country.code, Invoice.currency))
    )
    charged_back = (
        select(
            func.to_char(func.timezone("UTC", LedgerEntry.posted_at), "YYYY-MM").label("month"),
            Country.code.label("country"),
            LedgerEntry.currency.label("currency"),
            literal(CHARGEBACKS).label("feature"),
            -cast(
                func.round(
                    cast(LedgerEntry.debit_minor, Numeric)
                    * base.net_minor
                    / func.nullif(base.gross_minor, 0)
                ),
                BigInteger,
            ).label("net_minor"),
        )
        .select_from(LedgerEntry)
        .join(base, base.payment_id == LedgerEntry.payment_id)
        .join(Country, Country.invoice_series == base.series)
        .where(
            LedgerEntry.kind == "chargeback",
            LedgerEntry.account == ledger.CHARGEBACKS,
            *filters.moments(LedgerEntry.posted_at),
            *filters.place(Country.code, LedgerEntry.currency),
        )
    )
    return invoiced.union_all(charged_back).subquery("revenue")


@dataclass(frozen=True)
class RevenueCell:
    """Net revenue of one combination of keys (say a month and a feature) in one currency."""

    keys: tuple[str, ...]
    currency: str
    net_minor: int


def revenue_cells(
    session: Session, filters: FinanceFilter, by: Sequence[Group]
) -> list[RevenueCell]:
    """Net revenue grouped by `by` (in that order) and currency, in minor units."""
    lines = _revenue_lines(filters)
    keys = [lines.c[name] for name in by]
    query = (
        select(*keys, lines.c.currency, func.sum(lines.c.net_minor))
        .group_by(*keys, lines.c.currency)
        .order_by(lines.c.currency, *keys)
    )
    return [
        RevenueCell(tuple(row[: len(by)]), row[len(by)], int(row[len(by) + 1]))
        for row in session.execute(query)
    ]


@dataclass(frozen=True)
class Revenue:
    group: Group
    cells: list[RevenueCell]
    totals: dict[str, int]  # currency -> net minor units


def revenue(session: Session, filters: FinanceFilter, group: Group) -> Revenue:
    """Net revenue by feature, country or month, with each currency's total."""
    cells = revenue_cells(session, filters, (group,))
    totals: dict[str, int] = {}
    for cell in cells:
        totals[cell.currency] = totals.get(cell.currency, 0) + cell.net_minor
    return Revenue(group, cells, totals)


# --- refunds and failed payments -------------------------------------------------------------


@dataclass(frozen=True)
class Refund:
    """A credit note: money given back on an invoice."""

    invoice_id: int
    number: str
    issue_date: date
    corrects_id: int
    corrects_number: str
    customer_id: int
    customer: str
    country: str
    currency: str
    net_minor: int  # positive: what was given back
    gross_minor: int
    reason: str | None  # the purchase's reason when the store refunded it
    refunded_by: str | None  # who asked for it, as the payment's history says


def _refund_query(filters: FinanceFilter) -> Select[*tuple[Any, ...]]:
    from caas.store.models import Purchase  # the store imports billing, not the other way round

    note = aliased(Invoice, name="note")
    corrected = aliased(Invoice, name="corrected")
    reason = (
        select(Purchase.failure_code)
        .where(Purchase.payment_id == corrected.payment_id, Purchase.state == "refunded")
        .limit(1)
        .scalar_subquery()
    )
    refunded_by = (
        select(HistoryEntry.actor_kind + ":" + HistoryEntry.actor_label)
        .where(
            HistoryEntry.subject_type == "payment",
            HistoryEntry.subject_id == corrected.payment_id,
            HistoryEntry.event.in_(("payment.refunded", "payment.partially_refunded")),
            HistoryEntry.at == note.issued_at,
        )
        .order_by(HistoryEntry.id)
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(
            note.id,
            note.number,
            note.issue_date,
            corrected.id,
            corrected.number,
            note.customer_id,
            note.buyer_name,
            Country.code,
            note.currency,
            -note.net_minor,
            -note.gross_minor,
            reason,
            refunded_by,
        )
        .select_from(note)
        .join(corrected, corrected.id == note.corrects_id)
        .join(Country, Country.invoice_series == corrected.series)
        .where(
            note.kind == CREDIT_NOTE,
            *filters.days(note.issue_date),
            *filters.place(Country.code, note.currency),
        )
    )


def _counted(query: Select[*tuple[Any, ...]]) -> Select[int]:
    """How many rows `query` finds, without computing its columns."""
    return query.with_only_columns(func.count(), maintain_column_froms=False)


def refunds(
    session: Session, filters: FinanceFilter, *, limit: int = 50, offset: int = 0
) -> tuple[int, list[Refund]]:
    """How many credit notes match, and one page of them, newest first."""
    query = _refund_query(filters)
    total = session.scalar(_counted(query)) or 0
    page = query.order_by(query.selected_columns[2].desc(), query.selected_columns[0].desc())
    rows = session.execute(page.limit(limit).offset(offset))
    return total, [Refund(*row) for row in rows]


@dataclass(frozen=True)
class FailedPayment:
    payment_id: int
    kind: str
    customer_id: int
    customer: str
    email: str
    country: str
    amount_minor: int
    currency: str
    failure_code: str | None
    failure_reason: str | None
    failed_at: datetime


def _failed_query(filters: FinanceFilter) -> Select[*tuple[Any, ...]]:
    country = func.coalesce(Payment.invoice_country, Sale.country, Customer.country)
    return (
        select(
            Payment.id,
            Payment.kind,
            Payment.customer_id,
            Customer.first_name + " " + Customer.last_name,
            Customer.email,
            country,
            Payment.amount_minor,
            Payment.currency,
            Payment.failure_code,
            Payment.failure_reason,
            Payment.updated_at,
        )
        .join(Customer, Customer.id == Payment.customer_id)
        .outerjoin(Sale, Sale.id == Payment.sale_id)
        .where(
            Payment.state == "failed",
            *filters.moments(Payment.updated_at),
            *filters.place(country, Payment.currency),
        )
    )


def failed_payments(
    session: Session, filters: FinanceFilter, *, limit: int = 50, offset: int = 0
) -> tuple[int, list[FailedPayment]]:
    """How many payments failed in the range, and one page of them, newest first."""
    query = _failed_query(filters)
    total = session.scalar(_counted(query)) or 0
    page = query.order_by(Payment.updated_at.desc(), Payment.id.desc())
    rows = session.execute(page.limit(limit).offset(offset))
    return total, [FailedPayment(*row) for row in rows]


# --- CSV exports -----------------------------------------------------------------------------

INVOICE_COLUMNS = (
    "number",
    "series",
    "kind",
    "issue_date",
    "customer_id",
    "customer",
    "buyer_tax_id",
    "country",
    "currency",
    "net",
    "vat",
    "gross",
    "corrects_number",
)

RowSource = Callable[[Session, FinanceFilter], Iterator[list[str]]]

LEDGER_COLUMNS = (
    "id",
    "posted_at",
    "idempotency_key",
    "position",
    "kind",
    "payment_id",
    "reference",
    "provider_ref",
    "customer_id",
    "account",
    "debit",
    "credit",
    "currency",
)


def _invoice_query(filters: FinanceFilter) -> Select[*tuple[Any, ...]]:
    base = aliased(Invoice, name="base")
    return (
        select(
            Invoice.number,
            Invoice.series,
            Invoice.kind,
            Invoice.issue_date,
            Invoice.customer_id,
            Invoice.buyer_name,
            Invoice.buyer_national_id,
            Country.code,
            Invoice.currency,
            Invoice.net_minor,
            Invoice.vat_minor,
            Invoice.gross_minor,
            Invoice.corrects_number,
        )
        .select_from(Invoice)
        .join(base, base.id == func.coalesce(Invoice.corrects_id, Invoice.id))
        .join(Country, Country.invoice_series == base.series)
        .where(*filters.days(Invoice.issue_date), *filters.place(Country.code, Invoice.currency))
    )


def _ledger_query(filters: FinanceFilter) -> Select[*tuple[Any, ...]]:
    return select(
        LedgerEntry.id,
        LedgerEntry.posted_at,
        LedgerEntry.idempotency_key,
        LedgerEntry.position,
        LedgerEntry.kind,
        LedgerEntry.payment_id,
        LedgerEntry.reference,
        LedgerEntry.provider_ref,
        LedgerEntry.customer_id,
        LedgerEntry.account,
        LedgerEntry.debit_minor,
        LedgerEntry.credit_minor,
        LedgerEntry.currency,
    ).where(
        # A ledger line has no country: the export takes the range and the currency only.
        *filters.moments(LedgerEntry.posted_at),
        *([LedgerEntry.currency == filters.currency] if filters.currency else []),
    )


def count_invoices(session: Session, filters: FinanceFilter) -> int:
    query = select(func.count()).select_from(_invoice_query(filters).subquery())
    return session.scalar(query) or 0


def count_ledger_entries(session: Session, filters: FinanceFilter) -> int:
    query = select(func.count()).select_from(_ledger_query(filters).subquery())
    return session.scalar(query) or 0


def invoice_rows(session: Session, filters: FinanceFilter) -> Iterator[list[str]]:
    """The invoices and credit notes of the range as CSV fields, oldest first, read from a
    server-side cursor a batch at a time."""
    query = _invoice_query(filters).order_by(Invoice.id).execution_options(yield_per=BATCH)
    for row in session.execute(query):
        currency = row[8]
        yield [
            row[0],
            row[1],
            row[2],
            row[3].isoformat(),
            str(row[4]),
            row[5],
            row[6],
            row[7],
            currency,
            decimal_text(row[9], currency),
            decimal_text(row[10], currency),
            decimal_text(row[11], currency),
            row[12] or "",
        ]


def ledger_rows(session: Session, filters: FinanceFilter) -> Iterator[list[str]]:
    """The ledger's lines posted in the range (UTC days) as CSV fields, in posting order."""
    query = _ledger_query(filters).order_by(LedgerEntry.id).execution_options(yield_per=BATCH)
    for row in session.execute(query):
        currency = row[12]
        yield [
            str(row[0]),
            row[1].astimezone(UTC).isoformat(),
            row[2],
            str(row[3]),
            row[4],
            str(row[5]),
            row[6],
            row[7] or "",
            str(row[8]),
            row[9],
            decimal_text(row[10], currency),
            decimal_text(row[11], currency),
            currency,
        ]


def csv_chunks(header: Sequence[str], rows: Iterable[list[str]]) -> Iterator[str]:
    """CSV text in pieces of about `BATCH` rows: the header first, then the rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for count, row in enumerate(rows, start=1):
        writer.writerow(row)
        if count % BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
