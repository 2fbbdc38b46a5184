"""Turning sales into their API shapes (kept apart so the routes stay thin)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from caas.accounts.models import Dealership, User
from caas.catalog.models import Platform
from caas.core.money import Money
from caas.core.schemas import MoneyRead
from caas.sales import service
from caas.sales.models import Customer, Sale
from caas.sales.rules import STATE_LABELS, Quote, QuoteLine
from caas.sales.schemas import (
    CustomerRead,
    QuoteLineRead,
    QuoteRead,
    SaleRead,
    SaleSummary,
)


def quote_read(priced: Quote, locale: str) -> QuoteRead:
    return QuoteRead(
        lines=[
            QuoteLineRead(description=line.description, net=MoneyRead.of(line.net, locale))
            for line in priced.lines
        ],
        vat_rate_percent=f"{priced.vat_rate_bp / 100:.2f}",
        net=MoneyRead.of(priced.net, locale),
        vat=MoneyRead.of(priced.vat, locale),
        total=MoneyRead.of(priced.total, locale),
        deposit=MoneyRead.of(priced.deposit, locale),
    )


def sale_quote(sale: Sale) -> Quote:
    """The quote as priced when the sale was closed (prices may have changed since)."""
    currency = sale.currency
    return Quote(
        lines=tuple(
            QuoteLine(line["description"], Money(int(line["net_minor"]), currency))
            for line in sale.quote_lines
        ),
        vat_rate_bp=sale.vat_rate_bp,
        net=Money(sale.net_minor, currency),
        vat=Money(sale.vat_minor, currency),
        total=Money(sale.total_minor, currency),
        deposit=Money(sale.deposit_minor, currency),
    )


def sale_read(session: Session, sale: Sale, locale: str) -> SaleRead:
    customer = session.get_one(Customer, sale.customer_id)
    platform = session.get_one(Platform, sale.platform_id)
    dealership = session.get_one(Dealership, sale.dealership_id)
    salesperson = session.get_one(User, sale.salesperson_id)
    features = service.sale_features(session, sale.id)
    return SaleRead(
        id=sale.id,
        number=sale.number,
        state=sale.state,
        state_label=STATE_LABELS[sale.state],
        dealership=dealership.name,
        salesperson=salesperson.full_name,
        customer=CustomerRead.model_validate(customer),
        platform=platform.code,
        platform_name=platform.name,
        features=[feature.code for feature in features],
        service_period_months=sale.service_period_months,
        maintenance_included=sale.maintenance_included,
        quote=quote_read(sale_quote(sale), locale),
        created_at=sale.created_at,
        updated_at=sale.updated_at,
    )


def sale_summary(session: Session, sale: Sale, locale: str) -> SaleSummary:
    customer = session.get_one(Customer, sale.customer_id)
    platform = session.get_one(Platform, sale.platform_id)
    return SaleSummary(
        id=sale.id,
        number=sale.number,
        state=sale.state,
        state_label=STATE_LABELS[sale.state],
        customer_name=customer.full_name,
        platform=platform.name,
        total=MoneyRead.of(Money(sale.total_minor, sale.currency), locale),
        created_at=sale.created_at,
    )
