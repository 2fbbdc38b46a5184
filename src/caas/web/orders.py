"""One order as its pages show it: gathered from every domain that has a part in it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.billing import service as billing
from caas.billing.models import Payment
from caas.billing.rules import OPEN_STATES as OPEN_PAYMENT_STATES
from caas.catalog import service as catalog
from caas.catalog.models import Feature
from caas.core.history import HistoryEntry, subject_history
from caas.delivery.models import Delivery
from caas.delivery.service import delivery_of
from caas.files import service as files
from caas.files.service import FileScope
from caas.registration.read import registration_read
from caas.registration.schemas import RegistrationRead
from caas.registration.service import registration_of
from caas.sales import service as sales
from caas.sales.models import Sale
from caas.sales.read import sale_read, sale_summary
from caas.sales.rules import STATE_LABELS
from caas.sales.schemas import SaleRead, SaleSummary
from caas.vehicles.models import Vehicle
from caas.vehicles.service import vehicle_for_sale
from caas.web.display import zone_of_country

PAGE_SIZE = 20

# The order states in the order an order goes through them (for the state filter).
STATES = tuple(STATE_LABELS)


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
    def payment_in_progress(self) -> bool:
        """A payment waits for the provider's answer: paying again now would be refused."""
        return any(payment.state in OPEN_PAYMENT_STATES for payment in self.payments)

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
    chosen: dict[str, Any] = {"search": search, "state": state, "country": country}
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


def customer_file_page(
    session: Session, scope: FileScope, *, language: str, now: datetime
) -> dict[str, Any]:
    """What a file page shows: the file as its reader may see it, with option names."""
    zone = zone_of_country(scope.customer.country)
    found = files.customer_file(
        session, scope, language=language, today=now.astimezone(ZoneInfo(zone)).date()
    )
    option_names = {
        (platform.code, feature.code): feature.name
        for platform in catalog.list_platforms(session)
        for feature in catalog.platform_features(session, platform.id)
    }
    return {"file": found, "option_names": option_names, "zone": zone}
