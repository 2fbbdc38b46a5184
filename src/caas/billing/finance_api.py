"""Routes of the maker's finance views: revenue, refunds, failed payments, CSV exports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.deps import require
from caas.accounts.models import Role
from caas.billing import finance
from caas.core.api import DbSession, error_responses
from caas.core.money import Money
from caas.core.schemas import MoneyRead

router = APIRouter(
    prefix="/api/v1/finance",
    tags=["finance"],
    dependencies=[Depends(require(Role.OPERATOR))],
)

From = Annotated[
    date | None,
    Query(alias="from", description="First day included (YYYY-MM-DD)", examples=["2026-01-01"]),
]
To = Annotated[
    date | None,
    Query(alias="to", description="Last day included (YYYY-MM-DD)", examples=["2026-12-31"]),
]
CountryFilter = Annotated[
    str | None,
    Query(pattern=r"^[A-Z]{2}$", description="Only this country (ISO 3166-1)", examples=["ES"]),
]
CurrencyFilter = Annotated[
    str | None,
    Query(pattern=r"^[A-Z]{3}$", description="Only this currency (ISO 4217)", examples=["EUR"]),
]
Limit = Annotated[int, Query(ge=1, le=200, description="At most this many")]
Offset = Annotated[int, Query(ge=0, description="Skip this many first (paging)")]
LANGUAGE = "en"  # the formatted amounts of a staff API


def _money(amount_minor: int, currency: str) -> MoneyRead:
    return MoneyRead.of(Money(amount_minor, currency), LANGUAGE)


class RevenueRowRead(BaseModel):
    """Net revenue (VAT excluded) of one feature, country or month in one currency."""

    key: str = Field(
        description="The option's code, `vehicle sale` or `chargebacks`; a country code; or a "
        "month YYYY-MM",
        examples=["winter_traction"],
    )
    net: MoneyRead = Field(description="Invoiced less credit notes and chargebacks, net of VAT")


class RevenueRead(BaseModel):
    """Net revenue grouped one way, and each currency's total (currencies never mixed)."""

    group: finance.Group = Field(description="How the rows are grouped", examples=["feature"])
    rows: list[RevenueRowRead] = Field(description="Ordered by currency, then key")
    totals: list[MoneyRead] = Field(description="One total per currency")


class RefundRead(BaseModel):
    """A credit note: money given back on an invoice."""

    invoice_id: int = Field(description="Database id of the credit note", examples=[9])
    number: str = Field(description="Number of the credit note", examples=["RES-2026-000001"])
    issue_date: date = Field(description="Date of issue, in the seller's country")
    corrects_id: int = Field(description="Database id of the corrected invoice", examples=[3])
    corrects_number: str = Field(
        description="Number of the invoice it corrects", examples=["ES-2026-000003"]
    )
    customer_id: int = Field(description="Database id of the customer", examples=[4])
    customer: str = Field(description="The buyer's name on the note", examples=["Ana García"])
    country: str = Field(description="Country of the invoice's series", examples=["ES"])
    net: MoneyRead = Field(description="Net amount given back (positive)")
    gross: MoneyRead = Field(description="Amount given back, VAT included (positive)")
    reason: str | None = Field(
        description="Why the store refunded it (`car_rejected`...); null otherwise",
        examples=["car_rejected"],
    )
    refunded_by: str | None = Field(
        description="Who refunded, as the payment's history says (kind:label)",
        examples=["provider:sandbox"],
    )


class RefundPage(BaseModel):
    """One page of credit notes, newest first."""

    total: int = Field(description="How many match (all pages)", examples=[3])
    items: list[RefundRead] = Field(description="Newest first")


class FailedPaymentRead(BaseModel):
    """A payment that failed: declined, refused or never confirmed."""

    payment_id: int = Field(description="Database id of the payment", examples=[12])
    kind: str = Field(
        description="deposit, final, option, renewal, occurrence or metered", examples=["renewal"]
    )
    customer_id: int = Field(description="Database id of the customer", examples=[4])
    customer: str = Field(description="The customer's name", examples=["Ana García"])
    email: str = Field(description="The customer's e-mail", examples=["ana@example.com"])
    country: str = Field(description="Country it was charged in", examples=["ES"])
    amount: MoneyRead = Field(description="What was asked, VAT included")
    failure_code: str | None = Field(description="Why, as a code", examples=["card_declined"])
    failure_reason: str | None = Field(
        description="Why, for a person", examples=["insufficient funds"]
    )
    failed_at: datetime = Field(description="When it failed, with UTC offset")


class FailedPaymentPage(BaseModel):
    """One page of failed payments, newest first."""

    total: int = Field(description="How many match (all pages)", examples=[2])
    items: list[FailedPaymentRead] = Field(description="Newest first")


def _filters(
    start: From = None,
    end: To = None,
    country: CountryFilter = None,
    currency: CurrencyFilter = None,
) -> finance.FinanceFilter:
    return finance.FinanceFilter(start=start, end=end, country=country, currency=currency)


Filters = Annotated[finance.FinanceFilter, Depends(_filters)]


@router.get(
    "/revenue",
    response_model=RevenueRead,
    summary="Net revenue by feature, country or month, with each currency's total",
    description="Invoiced net amounts less credit notes and chargebacks, in the month of "
    "issue; `from`/`to` are days of issue. Never sums across currencies.",
    responses=error_responses(401, 403, 422),
)
def get_revenue(
    session: DbSession,
    filters: Filters,
    group: Annotated[
        finance.Group, Query(description="feature, country or month", examples=["feature"])
    ] = "feature",
) -> RevenueRead:
    found = finance.revenue(session, filters, group)
    return RevenueRead(
        group=group,
        rows=[
            RevenueRowRead(key=cell.keys[0], net=_money(cell.net_minor, cell.currency))
            for cell in found.cells
        ],
        totals=[_money(amount, currency) for currency, amount in sorted(found.totals.items())],
    )


@router.get(
    "/refunds",
    response_model=RefundPage,
    summary="Credit notes with the invoice they correct, amount, reason and date",
    responses=error_responses(401, 403, 422),
)
def list_refunds(
    session: DbSession, filters: Filters, limit: Limit = 50, offset: Offset = 0
) -> RefundPage:
    total, found = finance.refunds(session, filters, limit=limit, offset=offset)
    return RefundPage(
        total=total,
        items=[
            RefundRead(
                invoice_id=refund.invoice_id,
                number=refund.number,
                issue_date=refund.issue_date,
                corrects_id=refund.corrects_id,
                corrects_number=refund.corrects_number,
                customer_id=refund.customer_id,
                customer=refund.customer,
                country=refund.country,
                net=_money(refund.net_minor, refund.currency),
                gross=_money(refund.gross_minor, refund.currency),
                reason=refund.reason,
                refunded_by=refund.refunded_by,
            )
            for refund in found
        ],
    )


@router.get(
    "/failed-payments",
    response_model=FailedPaymentPage,
    summary="Payments that failed, with the customer, amount and why",
    description="`from`/`to` are UTC days of the failure.",
    responses=error_responses(401, 403, 422),
)
def list_failed_payments(
    session: DbSession, filters: Filters, limit: Limit = 50, offset: Offset = 0
) -> FailedPaymentPage:
    total, found = finance.failed_payments(session, filters, limit=limit, offset=offset)
    return FailedPaymentPage(
        total=total,
        items=[
            FailedPaymentRead(
                payment_id=failed.payment_id,
                kind=failed.kind,
                customer_id=failed.customer_id,
                customer=failed.customer,
                email=failed.email,
                country=failed.country,
                amount=_money(failed.amount_minor, failed.currency),
                failure_code=failed.failure_code,
                failure_reason=failed.failure_reason,
                failed_at=failed.failed_at,
            )
            for failed in found
        ],
    )


def _csv(
    request: Request, name: str, header: tuple[str, ...], rows: finance.RowSource, filters: Filters
) -> StreamingResponse:
    """The rows streamed as CSV from a session of their own (the request's has ended by
    the time the body is sent)."""
    sessions: sessionmaker[Session] = request.app.state.sessions

    def body() -> Iterator[str]:
        with sessions() as session:
            yield from finance.csv_chunks(header, rows(session, filters))

    first = filters.start.isoformat() if filters.start else "start"
    last = filters.end.isoformat() if filters.end else "end"
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}-{first}-{last}.csv"'},
    )


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "CSV with a header row"}
}


@router.get(
    "/invoices.csv",
    response_class=StreamingResponse,
    summary="Invoices and credit notes of a range as CSV (amounts as decimals)",
    description="Columns: " + ", ".join(finance.INVOICE_COLUMNS) + ". `from`/`to` are days "
    "of issue.",
    responses={**CSV_RESPONSE, **error_responses(401, 403, 422)},
)
def invoices_csv(request: Request, filters: Filters) -> StreamingResponse:
    return _csv(request, "invoices", finance.INVOICE_COLUMNS, finance.invoice_rows, filters)


@router.get(
    "/ledger.csv",
    response_class=StreamingResponse,
    summary="Ledger lines of a range as CSV (amounts as decimals)",
    description="Columns: " + ", ".join(finance.LEDGER_COLUMNS) + ". `from`/`to` are UTC "
    "days of posting.",
    responses={**CSV_RESPONSE, **error_responses(401, 403, 422)},
)
def ledger_csv(request: Request, filters: Filters) -> StreamingResponse:
    return _csv(request, "ledger", finance.LEDGER_COLUMNS, finance.ledger_rows, filters)
