"""Tables of upkeep: workshops and their calendars, parts, service orders, standing consent."""

from __future__ import annotations

from datetime import datetime, time

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Workshop(Base):
    """An official workshop: a place with opening hours, bays working in parallel, a stock."""

    __tablename__ = "workshops"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    city: Mapped[str] = mapped_column(String(120))
    address: Mapped[str] = mapped_column(String(300))
    postal_code: Mapped[str] = mapped_column(String(20))
    # Millionths of a degree: integers, the distance between two places is computed from them.
    latitude_e6: Mapped[int]
    longitude_e6: Mapped[int]
    # IANA name; the opening hours are wall-clock times there.
    timezone: Mapped[str] = mapped_column(String(60))
    # Bays working in parallel: that many bookings may share a time.
    bays: Mapped[int]
    # The calendar's grid: every booking starts on it and takes whole cells of it.
    grid_minutes: Mapped[int] = mapped_column(default=30)
    # Minutes a need takes here, by need (`caas.upkeep.rules.NEEDS`); missing: the default.
    slot_minutes: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)
    email: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime]


class WorkshopStaff(Base):
    """A user with the workshop role working at one workshop."""

    __tablename__ = "workshop_staff"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    workshop_id: Mapped[int] = mapped_column(ForeignKey("workshops.id"), index=True)


class OpeningHours(Base):
    """One opening period of a workshop on one weekday (0 Monday), in its own timezone."""

    __tablename__ = "workshop_hours"
    __table_args__ = (
        UniqueConstraint("workshop_id", "weekday", "opens"),
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        CheckConstraint("opens < closes", name="period"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workshop_id: Mapped[int] = mapped_column(ForeignKey("workshops.id"))
    weekday: Mapped[int]
    opens: Mapped[time]
    closes: Mapped[time]


class Part(Base):
    """A part or a labour item of the catalog (`kind` part | labour), for one need."""

    __tablename__ = "parts"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    need: Mapped[str] = mapped_column(String(20), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # How many go into one order for the need (4 tyres).
    quantity: Mapped[int] = mapped_column(default=1)


class PartPrice(Base):
    """The net price of one part in one country, in its currency."""

    __tablename__ = "part_prices"
    __table_args__ = (UniqueConstraint("part_id", "country"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    part_id: Mapped[int] = mapped_column(ForeignKey("parts.id"))
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    net_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))


class WorkshopStock(Base):
    """How many of a part a workshop has free; reservations take from it, cancels give back."""

    __tablename__ = "workshop_stock"
    __table_args__ = (
        UniqueConstraint("workshop_id", "part_id"),
        CheckConstraint("on_hand >= 0", name="on_hand"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workshop_id: Mapped[int] = mapped_column(ForeignKey("workshops.id"))
    part_id: Mapped[int] = mapped_column(ForeignKey("parts.id"))
    on_hand: Mapped[int]


class ServiceOrder(Base):
    """One need of one car, fixed at a workshop (`caas.upkeep.rules.ORDER`).

    At most one open order (proposed, confirmed, parts_reserved) per car and need: the
    partial unique index, so detection that fires twice makes one order.
    """

    __tablename__ = "service_orders"
    __table_args__ = (
        Index(
            "uq_service_orders_one_open",
            "vehicle_id",
            "need",
            unique=True,
            postgresql_where=text("state IN ('proposed', 'confirmed', 'parts_reserved')"),
        ),
        Index("ix_service_orders_customer", "customer_id", "id"),
        Index("ix_service_orders_workshop_slot", "workshop_id", "slot_start"),
        Index(
            "ix_service_orders_unanswered",
            "created_at",
            postgresql_where=text("state = 'proposed' AND reminded_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    # service | washer_fluid | adblue | tyre_tread | brake_pads | battery_12v
    need: Mapped[str] = mapped_column(String(20))
    # proposed | confirmed | parts_reserved | done | cancelled
    state: Mapped[str] = mapped_column(String(20))
    workshop_id: Mapped[int | None] = mapped_column(ForeignKey("workshops.id"))
    slot_start: Mapped[datetime | None]
    slot_end: Mapped[datetime | None]
    bay: Mapped[int | None]
    # The quote, net per line in minor units of `currency`; VAT of the customer's country.
    currency: Mapped[str] = mapped_column(String(3))
    lines: Mapped[list[dict[str, object]]] = mapped_column(JSONB, default=list)
    net_minor: Mapped[int]
    vat_minor: Mapped[int]
    gross_minor: Mapped[int]
    # Covered by the customer's maintenance plan: the quote is 0 and nothing is charged.
    included_in_plan: Mapped[bool]
    # What detection saw (signal, value, threshold), and what else the order needs to keep.
    detail: Mapped[dict[str, object]] = mapped_column(JSONB, default=dict)
    # Placed under the customer's standing consent, without asking.
    auto_confirmed: Mapped[bool] = mapped_column(default=False)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    maintenance_record_id: Mapped[int | None] = mapped_column(ForeignKey("maintenance_records.id"))
    cancel_reason: Mapped[str | None] = mapped_column(String(300))
    reminded_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    done_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]


class BayBooking(Base):
    """One grid cell of one bay taken by an order: the unique key is what stops two
    customers from getting the same slot."""

    __tablename__ = "workshop_bookings"
    __table_args__ = (UniqueConstraint("workshop_id", "starts_at", "bay"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    workshop_id: Mapped[int] = mapped_column(ForeignKey("workshops.id"))
    starts_at: Mapped[datetime]
    bay: Mapped[int]
    order_id: Mapped[int] = mapped_column(ForeignKey("service_orders.id"), index=True)


class UpkeepPreference(Base):
    """A customer's choices: the preferred workshop and the standing consent (off by default:
    no row, or `auto_order` false)."""

    __tablename__ = "upkeep_preferences"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    preferred_workshop_id: Mapped[int | None] = mapped_column(ForeignKey("workshops.id"))
    auto_order: Mapped[bool] = mapped_column(default=False)
    # Orders up to this gross amount (minor units of `currency`) are placed without asking.
    auto_limit_minor: Mapped[int] = mapped_column(default=0)
    currency: Mapped[str] = mapped_column(String(3))
    updated_at: Mapped[datetime]
