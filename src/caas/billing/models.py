"""Tables of money: payments through the provider, invoices with their lines and numbering."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from alembic.autogenerate import comparators
from alembic.operations import ops
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Payment(Base):
    """One attempt to take money from the customer's card; `state` follows `rules.PAYMENT`.

    The card token is used for the provider call and never stored: only the provider's
    reference and the brand and last four digits it returns.
    """

    __tablename__ = "payments"
    __table_args__ = (
        # A retried request with the same key finds this row instead of paying again.
        UniqueConstraint("customer_id", "idempotency_key"),
        Index("ix_payments_sale_kind", "sale_id", "kind"),
        # The finance views list failed payments by when they failed.
        Index("ix_payments_failed", "updated_at", postgresql_where=text("state = 'failed'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sale_id: Mapped[int | None] = mapped_column(ForeignKey("sales.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    # deposit | final (a sale's); option | renewal | occurrence | metered (the store's)
    kind: Mapped[str] = mapped_column(String(20))
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(20))
    # Our name for it at the provider, random so that it never repeats even across databases;
    # the provider's idempotency keys derive from it (`rules.provider_key`).
    reference: Mapped[str] = mapped_column(String(40), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    provider_ref: Mapped[str | None] = mapped_column(String(80), index=True)
    card_brand: Mapped[str | None] = mapped_column(String(20))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    failure_code: Mapped[str | None] = mapped_column(String(60))
    failure_reason: Mapped[str | None] = mapped_column(String(300))
    refunded_minor: Mapped[int] = mapped_column(default=0)
    # The store's payments: what the invoice will say once captured (`rules.LineDraft` as
    # JSON, priced when the payment began) and in which country's series; None for a sale's.
    invoice_lines: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    invoice_country: Mapped[str | None] = mapped_column(String(2))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    authorised_at: Mapped[datetime | None]
    captured_at: Mapped[datetime | None]


class InvoiceCounter(Base):
    """The last number issued in a series and year; locked while the next one is issued."""

    __tablename__ = "invoice_counters"

    series: Mapped[str] = mapped_column(String(10), primary_key=True)
    year: Mapped[int] = mapped_column(primary_key=True)
    last_number: Mapped[int] = mapped_column(default=0)


class Invoice(Base):
    """An issued invoice: a legal document, never changed (a credit note corrects it).

    A credit note is an invoice of kind `credit_note` in its own series ("R" + the country's),
    with negative lines, pointing at the invoice it corrects (`corrects_id`, and its number
    kept on the row so the document renders from the row alone).
    """

    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("series", "year", "sequence"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    number: Mapped[str] = mapped_column(String(30), unique=True)
    series: Mapped[str] = mapped_column(String(10))
    year: Mapped[int]
    sequence: Mapped[int]
    kind: Mapped[str] = mapped_column(String(20))  # advance | final | option | credit_note
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    sale_id: Mapped[int | None] = mapped_column(ForeignKey("sales.id"), index=True)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), unique=True)
    language: Mapped[str] = mapped_column(String(8))
    currency: Mapped[str] = mapped_column(String(3))
    issued_at: Mapped[datetime]
    # In the seller's country, which is what the law reads; indexed for the finance views.
    issue_date: Mapped[date] = mapped_column(index=True)
    seller_name: Mapped[str] = mapped_column(String(200))
    seller_tax_id: Mapped[str] = mapped_column(String(40))
    seller_address: Mapped[str] = mapped_column(Text)
    buyer_name: Mapped[str] = mapped_column(String(200))
    buyer_national_id: Mapped[str] = mapped_column(String(40))
    buyer_address: Mapped[str] = mapped_column(Text)
    order_number: Mapped[str | None] = mapped_column(String(30))
    corrects_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), index=True)
    corrects_number: Mapped[str | None] = mapped_column(String(30))
    net_minor: Mapped[int]
    vat_minor: Mapped[int]
    gross_minor: Mapped[int]


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"
    __table_args__ = (UniqueConstraint("invoice_id", "position"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"))
    position: Mapped[int]
    description: Mapped[str] = mapped_column(String(300))
    net_minor: Mapped[int]
    vat_rate_bp: Mapped[int]
    vat_minor: Mapped[int]
    gross_minor: Mapped[int]


# Issued invoices are immutable in the database itself, not only in the code above it.
IMMUTABLE_INVOICES_SQL = """
CREATE FUNCTION refuse_invoice_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'an issued invoice cannot be changed (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION refuse_invoice_change();
CREATE TRIGGER invoice_lines_immutable BEFORE UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_invoice_change();
"""

DROP_IMMUTABLE_INVOICES_SQL = """
DROP TRIGGER IF EXISTS invoice_lines_immutable ON invoice_lines;
DROP TRIGGER IF EXISTS invoices_immutable ON invoices;
DROP FUNCTION IF EXISTS refuse_invoice_change();
"""


class _ExecuteWithUndo(ops.ExecuteSQLOp):
    """Raw SQL in a generated migration, with the SQL that undoes it on downgrade."""

    def __init__(self, sqltext: str, undo: str) -> None:
        super().__init__(sqltext)
        self.undo = undo

    def reverse(self) -> ops.ExecuteSQLOp:
        return ops.ExecuteSQLOp(self.undo)


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def _compare_invoice_triggers(
    autogen_context: Any, upgrade_ops: ops.UpgradeOps, _schemas: Any
) -> PriorityDispatchResult:
    """Autogenerate emits the triggers after the tables when the database lacks them."""
    connection = autogen_context.connection
    present = connection.execute(
        text("SELECT 1 FROM pg_trigger WHERE tgname = 'invoices_immutable'")
    ).first()
    if present is None:
        upgrade_ops.ops.append(
            _ExecuteWithUndo(IMMUTABLE_INVOICES_SQL, DROP_IMMUTABLE_INVOICES_SQL)
        )
    return PriorityDispatchResult.CONTINUE


class LedgerEntry(Base):
    """One line of a double-entry posting: money moved between two of the maker's accounts.

    A posting (one `idempotency_key`) is several lines whose debits equal their credits; the
    key is unique per line position, so a retried call posts nothing twice. Append-only: a
    trigger refuses UPDATE and DELETE (a mistake is corrected by a new posting).
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("idempotency_key", "position"),
        Index("ix_ledger_entries_customer_account", "customer_id", "account"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    position: Mapped[int]
    # authorisation | capture | void | refund | chargeback
    kind: Mapped[str] = mapped_column(String(20))
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    reference: Mapped[str] = mapped_column(String(40), index=True)  # our payment reference
    provider_ref: Mapped[str | None] = mapped_column(String(80))
    account: Mapped[str] = mapped_column(String(120))
    debit_minor: Mapped[int] = mapped_column(default=0)
    credit_minor: Mapped[int] = mapped_column(default=0)
    currency: Mapped[str] = mapped_column(String(3))
    posted_at: Mapped[datetime] = mapped_column(index=True)  # the exports read by range


# The ledger is append-only in the database itself, like the invoices.
APPEND_ONLY_LEDGER_SQL = """
CREATE FUNCTION refuse_ledger_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a ledger entry cannot be changed (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
"""

DROP_APPEND_ONLY_LEDGER_SQL = """
DROP TRIGGER IF EXISTS ledger_entries_append_only ON ledger_entries;
DROP FUNCTION IF EXISTS refuse_ledger_change();
"""


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def _compare_ledger_trigger(
    autogen_context: Any, upgrade_ops: ops.UpgradeOps, _schemas: Any
) -> PriorityDispatchResult:
    """Autogenerate emits the ledger's trigger after the tables when the database lacks it."""
    present = autogen_context.connection.execute(
        text("SELECT 1 FROM pg_trigger WHERE tgname = 'ledger_entries_append_only'")
    ).first()
    if present is None:
        upgrade_ops.ops.append(
            _ExecuteWithUndo(APPEND_ONLY_LEDGER_SQL, DROP_APPEND_ONLY_LEDGER_SQL)
        )
    return PriorityDispatchResult.CONTINUE


class PaymentMethod(Base):
    """A card the customer keeps with us as the provider's reusable token (never its number),
    with what the provider says of it; one of them, the default, pays the renewals.

    Removing a card keeps its row (`removed_at`): the customer's file and old payments still
    name it, and a token once removed is never charged again (`caas.billing.methods`).
    """

    __tablename__ = "payment_methods"
    __table_args__ = (
        UniqueConstraint("customer_id", "token"),
        # One default per customer among the cards not removed.
        Index(
            "uq_payment_methods_one_default",
            "customer_id",
            unique=True,
            postgresql_where=text("is_default AND removed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    token: Mapped[str] = mapped_column(String(80))
    brand: Mapped[str] = mapped_column(String(20))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int | None]
    exp_year: Mapped[int | None]
    is_default: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]
