"""One order as its pages show it: gathered from every domain that has a part in it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.billing import service as billing
from caas.billing.models import Invoice, Payment
from caas.catalog.manuals import MANUAL_LANGUAGES
from caas.catalog.models import Feature
from caas.core.history import HistoryEntry, customer_timeline, subject_history
from caas.delivery.models import Delivery
from caas.delivery.service import delivery_of
from caas.registration.read import registration_read
from caas.registration.schemas import RegistrationRead
from caas.registration.service import registration_of
from caas.sales import service as sales
from caas.sales.models import Customer, Sale
from caas.sales.read import sale_read, sale_summary
from caas.sales.rules import STATE_LABELS
from caas.sales.schemas import SaleRead, SaleSummary
from caas.vehicles.models import Vehicle
from caas.vehicles.service import vehicle_for_sale
from caas.web.display import zone_of_country

PAGE_SIZE = 20

# The order states in the order an order goes through them (for the state filter).
STATES = tuple(STATE_LABELS)
# Whether the sales service filters by the order's country (asked of the sales domain).
FILTERS_BY_COUNTRY = "country" in {field.name for field in fields(sales.SaleFilter)}


# Which payment the customer owes in which order state.
PAYMENT_DUE = {"awaiting_deposit": "deposit", "at_dealer": "final"}


@dataclass(frozen=True)
class OrderView:
    sale: Sale
    read: SaleRead
    features: list[Feature]
    history: list[HistoryEntry]
    payments: list[Payment]
    paid_minor: int
    vehicle: Vehicle | None
    registration: RegistrationRead | None
    delivery: Delivery | None
    zone: str

    @property
    def payment_due(self) -> str | None:
        """`deposit` or `final` while the order waits for that payment, else None."""
        return PAYMENT_DUE.get(self.sale.state)

    @property
    def due_minor(self) -> int:
        if self.payment_due == "deposit":
            return self.sale.deposit_minor
        if self.payment_due == "final":
            return self.sale.total_minor - self.paid_minor
        return 0


def order_view(session: Session, sale: Sale, language: str) -> OrderView:
    """Everything an order's page shows: the sale, its payments, car, registration, delivery."""
    registration = registration_of(session, sale.id)
    return OrderView(
        sale=sale,
        read=sale_read(session, sale, language),
        features=sales.sale_features(session, sale.id),
        history=subject_history(session, "order", sale.id),
        payments=billing.payments_for_sale(session, sale.id),
        paid_minor=billing.amount_paid(session, sale.id),
        vehicle=vehicle_for_sale(session, sale.id),
        registration=registration_read(registration, sale) if registration else None,
        delivery=delivery_of(session, sale.id),
        zone=zone_of_country(sale.country),
    )


@dataclass(frozen=True)
class OrderList:
    """One page of orders with what the filters and the pager need."""

    items: list[SaleSummary]
    total: int
    page: int
    pages: int
    query: str
    search: str
    state: str


def order_list(
    session: Session,
    user: User,
    *,
    language: str,
    search: str | None,
    state: str | None,
    page: int,
    country: str | None = None,
) -> OrderList:
    state = state if state in STATE_LABELS else None
    search = (search or "").strip() or None
    page = max(page, 1)
    chosen: dict[str, Any] = {"search": search, "state": state}
    if FILTERS_BY_COUNTRY:
        chosen["country"] = country
    sales_page, total = sales.list_sales(
        session,
        user,
        sales.SaleFilter(**chosen, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE),
    )
    filters = {key: value for key, value in chosen.items() if value}
    return OrderList(
        items=[sale_summary(session, sale, language) for sale in sales_page],
        total=total,
        page=page,
        pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
        query=urlencode(filters),
        search=search or "",
        state=state or "",
    )


@dataclass(frozen=True)
class Manual:
    title: str
    language: str
    url: str


@dataclass(frozen=True)
class CustomerFile:
    """The customer's file ("expediente"): purchases, manuals, maintenance, invoices, history."""

    customer: Customer
    orders: list[OrderView]
    manuals: list[Manual]
    invoices: list[Invoice]
    timeline: list[HistoryEntry]


def customer_file(
    session: Session, customer: Customer, owner: User, *, language: str
) -> CustomerFile:
    """`owner` is the customer's own account: their orders are exactly those it may see."""
    theirs, _ = sales.list_sales(session, owner, sales.SaleFilter(limit=200))
    orders = [order_view(session, sale, language) for sale in theirs]
    models = {order.read.platform: order.read.platform_name for order in orders}
    manuals = [
        Manual(
            title=name,
            language=manual_language,
            url=f"/api/v1/platforms/{code}/manual.pdf?lang={manual_language}",
        )
        for code, name in sorted(models.items())
        for manual_language in MANUAL_LANGUAGES
    ]
    return CustomerFile(
        customer=customer,
        orders=orders,
        manuals=manuals,
        invoices=billing.invoices_for_customer(session, customer.id),
        timeline=customer_timeline(session, customer.id),
    )
