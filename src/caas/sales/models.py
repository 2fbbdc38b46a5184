"""Tables of customers and their sales (the order, from the dealer's desk to the door)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (UniqueConstraint("country", "national_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    national_id: Mapped[str] = mapped_column(String(40))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str] = mapped_column(String(20))
    street: Mapped[str] = mapped_column(String(200))
    postal_code: Mapped[str] = mapped_column(String(20))
    city: Mapped[str] = mapped_column(String(120))
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    language: Mapped[str] = mapped_column(String(8))
    birth_date: Mapped[date | None]
    created_at: Mapped[datetime]

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


class Sale(Base):
    """A closed sale and the order it becomes; `state` follows `ORDER_STATES`."""

    __tablename__ = "sales"
    __table_args__ = (Index("ix_sales_dealership_created", "dealership_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(30), unique=True)
    dealership_id: Mapped[int] = mapped_column(ForeignKey("dealerships.id"))
    salesperson_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    platform_id: Mapped[int] = mapped_column(ForeignKey("platforms.id"))
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    currency: Mapped[str] = mapped_column(String(3))
    service_period_months: Mapped[int]
    maintenance_included: Mapped[bool]
    net_minor: Mapped[int]
    vat_rate_bp: Mapped[int]
    vat_minor: Mapped[int]
    total_minor: Mapped[int]
    deposit_minor: Mapped[int]
    # The quote's lines as priced when the sale closed: [{"description", "net_minor"}].
    quote_lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(40))
    factory_order_ref: Mapped[str | None] = mapped_column(String(60))
    last_factory_sequence: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SaleFeature(Base):
    """An option included in the plan for the whole service period, at the quoted price."""

    __tablename__ = "sale_features"
    __table_args__ = (UniqueConstraint("sale_id", "feature_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sale_id: Mapped[int] = mapped_column(ForeignKey("sales.id"))
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    net_minor: Mapped[int]
