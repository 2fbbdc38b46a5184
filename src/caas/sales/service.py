"""The rules of a sale: quoting, closing it, who may see it, and every move of the order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from caas.accounts import service as accounts
from caas.accounts.models import Dealership, Role, User
from caas.billing import vat
from caas.catalog import service as catalog
from caas.catalog.models import Country, Feature, Platform
from caas.core.errors import Conflict, NotFound
from caas.core.history import Actor, record
from caas.core.live import announce
from caas.core.money import Money
from caas.core.settings import Settings
from caas.notifications.service import notify_user
from caas.sales.models import Customer, Sale, SaleFeature
from caas.sales.rules import ORDER, STATE_LABELS, Quote, QuoteLine, quote
from caas.sales.schemas import CommercialPlan, CustomerIdentity

# States whose arrival the customer is told about (e-mail and in-app).
NOTIFIED_STATES = frozenset(STATE_LABELS) - {"awaiting_deposit", "registering"}


def price_plan(session: Session, *, country_code: str, plan: CommercialPlan, at: datetime) -> Quote:
    """The plan's quote with the VAT rate in force in the country on the day of `at`."""
    country = catalog.get_country(session, country_code)
    platform = catalog.platform_by_code(session, plan.platform)
    base = catalog.platform_price(session, platform, country.code)
    lines = [QuoteLine(f"{platform.name} base platform", Money(base.net_minor, country.currency))]
    for priced in catalog.plan_features(session, platform, country.code, plan.features):
        lines.append(
            QuoteLine(
                f"{priced.feature.name} ({plan.service_period_months} months)",
                Money(priced.plan_net_minor, country.currency),
            )
        )
    if plan.maintenance_included:
        lines.append(
            QuoteLine(
                f"Scheduled maintenance ({plan.service_period_months} months)",
                Money(base.maintenance_net_minor, country.currency),
            )
        )
    return quote(
        lines,
        currency=country.currency,
        vat_rate_bp=vat.rate_at(session, country.code, at),
        deposit_share_bp=country.deposit_share_bp,
    )


def _find_or_create_customer(
    session: Session, *, identity: CustomerIdentity, country: Country, now: datetime
) -> tuple[Customer, bool]:
    existing = session.scalars(
        select(Customer).where(
            Customer.country == identity.country, Customer.national_id == identity.national_id
        )
    ).first()
    if existing is not None:
        if existing.email != identity.email:
            raise Conflict(
                "this national id belongs to a customer with another e-mail",
                code="customer.identity_mismatch",
                field="customer.email",
            )
        return existing, False
    language = identity.language or country.language
    user = accounts.create_user(
        session,
        email=identity.email,
        full_name=f"{identity.first_name} {identity.last_name}",
        role=Role.CUSTOMER,
        language=language,
        now=now,
    )
    customer = Customer(
        user_id=user.id,
        first_name=identity.first_name,
        last_name=identity.last_name,
        national_id=identity.national_id,
        email=identity.email,
        phone=identity.phone,
        street=identity.street,
        postal_code=identity.postal_code,
        city=identity.city,
        country=identity.country,
        language=language,
        created_at=now,
    )
    session.add(customer)
    session.flush()
    return customer, True


def find_or_create_customer(
    session: Session, *, identity: CustomerIdentity, now: datetime
) -> tuple[Customer, bool]:
    """The customer with this identity (country and national id; the e-mail must match), or a
    new one with an account still to activate; and whether it is new. As a sale does it."""
    country = catalog.get_country(session, identity.country)
    return _find_or_create_customer(session, identity=identity, country=country, now=now)


def create_sale(
    session: Session,
    *,
    salesperson: User,
    identity: CustomerIdentity,
    plan: CommercialPlan,
    settings: Settings,
    now: datetime,
) -> Sale:
    """Close a sale: the customer (and their account), the plan, and the activation e-mail."""
    if salesperson.dealership_id is None:
        raise Conflict("this salesperson has no dealership", code="sale.no_dealership")
    country = catalog.get_country(session, identity.country)
    priced = price_plan(session, country_code=country.code, plan=plan, at=now)
    platform = catalog.platform_by_code(session, plan.platform)
    customer, is_new = _find_or_create_customer(
        session, identity=identity, country=country, now=now
    )
    sale = Sale(
        number="pending",
        dealership_id=salesperson.dealership_id,
        salesperson_id=salesperson.id,
        customer_id=customer.id,
        platform_id=platform.id,
        country=country.code,
        currency=country.currency,
        service_period_months=plan.service_period_months,
        maintenance_included=plan.maintenance_included,
        net_minor=priced.net.amount_minor,
        vat_rate_bp=priced.vat_rate_bp,
        vat_minor=priced.vat.amount_minor,
        total_minor=priced.total.amount_minor,
        deposit_minor=priced.deposit.amount_minor,
        quote_lines=[
            {"description": line.description, "net_minor": line.net.amount_minor}
            for line in priced.lines
        ],
        state="awaiting_deposit",
        created_at=now,
        updated_at=now,
    )
    session.add(sale)
    session.flush()
    sale.number = f"S{now.year}-{sale.id:06d}"
    for feature in catalog.plan_features(session, platform, country.code, plan.features):
        session.add(
            SaleFeature(
                sale_id=sale.id, feature_id=feature.feature.id, net_minor=feature.plan_net_minor
            )
        )
    actor = Actor(kind="dealer", label=salesperson.email, user_id=salesperson.id)
    record(
        session,
        at=now,
        actor=actor,
        subject_type="order",
        subject_id=sale.id,
        customer_id=customer.id,
        event="sale.closed",
        to_state=sale.state,
        details={"number": sale.number, "total_minor": sale.total_minor, "currency": sale.currency},
    )
    user = session.get_one(User, customer.user_id)
    if is_new or user.activated_at is None:
        accounts.send_activation(session, user=user, settings=settings, now=now, actor=actor)
    return sale


def transition_order(
    session: Session,
    sale: Sale,
    to_state: str,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    """Move the order through `ORDER`, keep the history row and tell the customer."""
    ORDER.check(sale.state, to_state)
    from_state = sale.state
    sale.state = to_state
    sale.updated_at = now
    record(
        session,
        at=now,
        actor=actor,
        subject_type="order",
        subject_id=sale.id,
        customer_id=sale.customer_id,
        event=f"order.{to_state}",
        from_state=from_state,
        to_state=to_state,
        details=details,
    )
    announce(session, f"sale:{sale.id}")  # the buyer's open order page follows at commit
    if to_state in NOTIFIED_STATES:
        _notify_customer(session, sale, f"order.{to_state}", details or {}, now)


def _notify_customer(
    session: Session, sale: Sale, kind: str, details: dict[str, Any], now: datetime
) -> None:
    customer = session.get_one(Customer, sale.customer_id)
    user = session.get_one(User, customer.user_id)
    platform = session.get_one(Platform, sale.platform_id)
    dealership = session.get_one(Dealership, sale.dealership_id)
    notify_user(
        session,
        user_id=user.id,
        email=customer.email,
        language=customer.language,
        kind=kind,
        context={
            "name": customer.first_name,
            "order_number": sale.number,
            "model": platform.name,
            "dealership": dealership.name,
            "dealership_city": dealership.city,
            "dealership_address": dealership.address,
            "country": customer.country,
            **details,
        },
        dedupe_key=f"{kind}:{sale.id}:{now.isoformat()}",
        now=now,
    )


def lock_sale(session: Session, sale_id: int) -> Sale:
    """The sale row locked for an update, so concurrent events apply one after another."""
    sale = session.scalars(select(Sale).where(Sale.id == sale_id).with_for_update()).first()
    if sale is None:
        raise NotFound("no such order")
    return sale


def visible_sales(user: User) -> Select[Sale]:
    """The sales `user` may see: a dealer its dealership's, a customer their own."""
    query = select(Sale).join(Customer, Customer.id == Sale.customer_id)
    if user.role is Role.DEALER:
        return query.where(Sale.dealership_id == user.dealership_id)
    if user.role is Role.CUSTOMER:
        return query.where(Customer.user_id == user.id)
    if user.role is Role.OPERATOR:
        return query
    return query.where(Sale.id.is_(None))


def get_sale_for(session: Session, user: User, sale_id: int, *, lock: bool = False) -> Sale:
    """The sale if `user` may see it; otherwise the same 404 as a missing one."""
    query = visible_sales(user).where(Sale.id == sale_id)
    if lock:
        query = query.with_for_update(of=Sale)
    sale = session.scalars(query).first()
    if sale is None:
        raise NotFound("no such order", code="order.not_found")
    return sale


@dataclass(frozen=True)
class SaleFilter:
    search: str | None = None
    state: str | None = None
    country: str | None = None
    limit: int = 50
    offset: int = 0


def list_sales(session: Session, user: User, filters: SaleFilter) -> tuple[list[Sale], int]:
    query = visible_sales(user)
    if filters.state:
        query = query.where(Sale.state == filters.state)
    if filters.country:
        query = query.where(Sale.country == filters.country)
    if filters.search:
        pattern = f"%{filters.search.strip()}%"
        query = query.where(
            or_(
                Sale.number.ilike(pattern),
                Customer.first_name.ilike(pattern),
                Customer.last_name.ilike(pattern),
                Customer.email.ilike(pattern),
                Customer.national_id.ilike(pattern),
            )
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Sale.created_at.desc(), Sale.id.desc())
        .limit(filters.limit)
        .offset(filters.offset)
    )
    return list(rows), total


def sale_features(session: Session, sale_id: int) -> list[Feature]:
    return list(
        session.scalars(
            select(Feature)
            .join(SaleFeature, SaleFeature.feature_id == Feature.id)
            .where(SaleFeature.sale_id == sale_id)
            .order_by(Feature.name)
        )
    )


def customer_of_user(session: Session, user: User) -> Customer:
    customer = session.scalars(select(Customer).where(Customer.user_id == user.id)).first()
    if customer is None:
        raise NotFound("no customer file for this account")
    return customer


def deposit_captured(session: Session, sale: Sale, *, actor: Actor, now: datetime) -> None:
    """The deposit is in: the order goes to the factory (queued, retried until acknowledged)."""
    from caas.factory.service import place_factory_order

    transition_order(session, sale, "waiting_for_factory", actor=actor, now=now)
    place_factory_order(session, sale, now=now)


def final_payment_captured(session: Session, sale: Sale, *, actor: Actor, now: datetime) -> None:
    """The car is paid in full: the dealer registers it with the country's authority."""
    from caas.registration.service import request_registration

    transition_order(session, sale, "registering", actor=actor, now=now)
    request_registration(session, sale, actor=actor, now=now)
