"""The customer's file: who may open it, and everything in it gathered from each domain.

The file is read-only here: each part belongs to its own domain (sales, vehicles, maintenance,
billing, the audit history) and this module only asks them. The customer and the maker's
operators see the whole file; a dealer sees the part about their dealership's sales.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.orm import Session

from caas.accounts.models import Dealership, Role, User
from caas.billing import service as billing
from caas.billing.models import Invoice
from caas.billing.read import invoice_summary
from caas.catalog.manuals import manual_language
from caas.catalog.models import Platform
from caas.catalog.read import manual_url
from caas.core.errors import NotFound
from caas.core.history import HistoryEntry, customer_timeline
from caas.core.money import Money
from caas.core.schemas import MoneyRead
from caas.files.schemas import (
    CustomerFileRead,
    DealershipRead,
    ManualLink,
    PurchaseRead,
    TimelineEntryRead,
)
from caas.maintenance import service as maintenance
from caas.maintenance.read import vehicle_services_read
from caas.sales import service as sales
from caas.sales.models import Customer, Sale
from caas.sales.read import quote_read, sale_quote
from caas.sales.rules import STATE_LABELS
from caas.sales.schemas import CustomerRead
from caas.vehicles import service as vehicles
from caas.vehicles.models import Vehicle


@dataclass(frozen=True)
class FileScope:
    """Whose file, and how much of it the reader may see."""

    customer: Customer
    sales: list[Sale]  # newest first
    whole: bool  # False for a dealer: only their dealership's sales and what hangs off them


def _not_found() -> NotFound:
    return NotFound("no such customer", code="customer.not_found")


def _sales_visible(session: Session, user: User, customer_id: int) -> list[Sale]:
    query = (
        sales.visible_sales(user)
        .where(Sale.customer_id == customer_id)
        .order_by(Sale.created_at.desc(), Sale.id.desc())
    )
    return list(session.scalars(query))


def own_file(session: Session, user: User) -> FileScope:
    """The caller's own file (customers)."""
    customer = sales.customer_of_user(session, user)
    return FileScope(customer, _sales_visible(session, user, customer.id), whole=True)


def file_for(session: Session, user: User, customer_id: int) -> FileScope:
    """A customer's file for `user`: operators any, a dealer their sales' customers, a
    customer their own; anyone else gets the same 404 as for a customer that does not exist."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise _not_found()
    if user.role is Role.OPERATOR or (user.role is Role.CUSTOMER and customer.user_id == user.id):
        return FileScope(customer, _sales_visible(session, user, customer.id), whole=True)
    if user.role is Role.DEALER:
        theirs = _sales_visible(session, user, customer.id)
        if theirs:
            return FileScope(customer, theirs, whole=False)
    raise _not_found()


def _purchase(session: Session, sale: Sale, vehicle: Vehicle | None, locale: str) -> PurchaseRead:
    platform = session.get_one(Platform, sale.platform_id)
    dealership = session.get_one(Dealership, sale.dealership_id)
    salesperson = session.get_one(User, sale.salesperson_id)
    paid = billing.amount_paid(session, sale.id)
    return PurchaseRead(
        id=sale.id,
        number=sale.number,
        state=sale.state,
        state_label=STATE_LABELS.get(sale.state, sale.state),
        created_at=sale.created_at,
        platform=platform.code,
        platform_name=platform.name,
        features=[feature.code for feature in sales.sale_features(session, sale.id)],
        service_period_months=sale.service_period_months,
        maintenance_included=sale.maintenance_included,
        quote=quote_read(sale_quote(sale), locale),
        paid=MoneyRead.of(Money(paid, sale.currency), locale),
        outstanding=MoneyRead.of(Money(max(sale.total_minor - paid, 0), sale.currency), locale),
        dealership=DealershipRead(
            code=dealership.code,
            name=dealership.name,
            city=dealership.city,
            address=dealership.address,
        ),
        salesperson=salesperson.full_name,
        vin=vehicle.vin if vehicle else None,
        plate=vehicle.plate if vehicle else None,
    )


def _manuals(session: Session, scope: FileScope, language: str) -> list[ManualLink]:
    links: dict[int, ManualLink] = {}
    written_in = manual_language(language)
    for sale in scope.sales:
        if sale.platform_id not in links:
            platform = session.get_one(Platform, sale.platform_id)
            links[sale.platform_id] = ManualLink(
                platform=platform.code,
                platform_name=platform.name,
                language=written_in,
                url=manual_url(platform.code, written_in),
            )
    return list(links.values())


def _entry(entry: HistoryEntry) -> TimelineEntryRead:
    is_order = entry.subject_type == "order"
    return TimelineEntryRead(
        at=entry.at,
        event=entry.event,
        subject=entry.subject_type,
        actor=f"{entry.actor_kind}: {entry.actor_label}",
        actor_kind=entry.actor_kind,
        from_state=entry.from_state,
        to_state=entry.to_state,
        to_state_label=STATE_LABELS.get(entry.to_state or "") if is_order else None,
        details=entry.details or {},
    )


def _subjects_in_scope(
    session: Session, scope: FileScope, cars: list[Vehicle], invoice_ids: list[int]
) -> set[tuple[str, int]]:
    allowed = {("order", sale.id) for sale in scope.sales}
    allowed |= {("vehicle", car.id) for car in cars}
    allowed |= {("invoice", invoice_id) for invoice_id in invoice_ids}
    for sale in scope.sales:
        allowed |= {("payment", p.id) for p in billing.payments_for_sale(session, sale.id)}
    # The customer's account (activation...) is part of any sale's story.
    allowed.add(("user", scope.customer.user_id))
    return allowed


def timeline(
    session: Session, scope: FileScope, *, cars: list[Vehicle] | None = None
) -> list[TimelineEntryRead]:
    """Every change in the file, oldest first, with time, actor and states.

    For a dealer, only what can be tied to their dealership's sales: the orders, their cars,
    payments and invoices, and the customer's account.
    """
    entries = customer_timeline(session, scope.customer.id)
    if not scope.whole:
        if cars is None:
            cars = _cars(session, scope)
        invoice_ids = [i.id for i in _invoices(session, scope)]
        allowed = _subjects_in_scope(session, scope, cars, invoice_ids)
        entries = [e for e in entries if (e.subject_type, e.subject_id) in allowed]
    return [_entry(entry) for entry in entries]


def _cars(session: Session, scope: FileScope) -> list[Vehicle]:
    found = (vehicles.vehicle_for_sale(session, sale.id) for sale in scope.sales)
    return [car for car in found if car is not None]


def _invoices(session: Session, scope: FileScope) -> list[Invoice]:
    found = billing.invoices_for_customer(session, scope.customer.id)
    if scope.whole:
        return found
    sale_ids = {sale.id for sale in scope.sales}
    return [invoice for invoice in found if invoice.sale_id in sale_ids]


def customer_file(
    session: Session, scope: FileScope, *, language: str, today: date
) -> CustomerFileRead:
    """The file as the reader may see it; amounts and labels in the reader's `language`."""
    by_sale = {sale.id: vehicles.vehicle_for_sale(session, sale.id) for sale in scope.sales}
    cars = [car for car in by_sale.values() if car is not None]
    if scope.whole:
        # The cars the customer has now: one sold on leaves with its live data, one bought
        # second-hand comes in (`caas.ownership`).
        cars = vehicles.vehicles_of_owner(session, scope.customer.id)
    return CustomerFileRead(
        customer=CustomerRead.model_validate(scope.customer),
        purchases=[_purchase(session, sale, by_sale[sale.id], language) for sale in scope.sales],
        manuals=_manuals(session, scope, language),
        maintenance=[
            vehicle_services_read(
                session, maintenance.maintenance_summary(session, car, today=today)
            )
            for car in cars
        ],
        invoices=[invoice_summary(invoice, language) for invoice in _invoices(session, scope)],
        timeline=timeline(session, scope, cars=cars),
    )
