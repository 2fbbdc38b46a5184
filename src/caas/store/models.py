"""Tables of the feature store: offers, entitlements, purchases, subscriptions, schedules.

An **entitlement** is the one fact the car's configuration is computed from: a car, a feature,
a window (open-ended when `valid_until` is None), a source and a state. Everything the customer
does in the store (a trial, a window, a subscription period, a permanent option, a metered
option, an occurrence of a planned or recurring window, the dealer's plan options at delivery)
ends up as entitlements; `caas.store.entitlements.car_entitlements` turns them into what
`caas.ota` signs.
"""

from __future__ import annotations

from datetime import date, datetime, time

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Offer(Base):
    """How a feature is sold in a country (`caas.store.rules.OFFER_KINDS`).

    - `trial`: free, once per car and feature, for `duration` (default "1M"); never turns
      into a paid plan by itself; a reminder goes out before it ends.
    - `window`: a fixed window of `duration` ("1D", "7D", "1M", "1Y", "3Y") for `net_minor`.
    - `custom`: the customer's own dates, `net_minor` per started day.
    - `subscription`: renews every `duration` ("1M" or "1Y") for `net_minor` until cancelled.
    - `permanent`: for the rest of the car's life, stays with the car when it is sold.
    - `metered`: `net_minor` per `unit` (hour, km or activation), invoiced monthly, with an
      optional monthly spending cap chosen by the customer.

    Prices are net, in the country's currency; VAT is the customer's country's
    (`caas.store.rules.price_line`). `refund_policy` (`caas.store.rules.REFUND_POLICIES`)
    says what a customer gets back when they stop early; `apply_deadline_seconds` is how long
    the platform waits for the car to apply a purchase before it voids or refunds it.
    """

    __tablename__ = "offers"
    __table_args__ = (
        UniqueConstraint("feature_id", "country", "kind", "duration", name="uq_offers_kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    kind: Mapped[str] = mapped_column(String(20))
    # "1D", "7D", "1M", "1Y", "3Y"; "" where the kind has none (custom, permanent, metered).
    duration: Mapped[str] = mapped_column(String(8), default="")
    net_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    unit: Mapped[str | None] = mapped_column(String(20))  # metered only: hour | km | activation
    refund_policy: Mapped[str] = mapped_column(String(30))
    apply_deadline_seconds: Mapped[int] = mapped_column(default=600)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Entitlement(Base):
    """The right to have one feature on in one car during a window (`rules.ENTITLEMENT`).

    It counts in the car's configuration while its state is `delivering` (paid for, on its
    way to the car: the payment is captured when the car applies it) or `active`, and
    `enabled` (the customer may switch an owned option off and on at will, without a charge).
    `valid_until` None: open-ended (permanent, metered, a subscription's current period is
    always closed). A car uses a trial of a feature once: the partial unique index.
    """

    __tablename__ = "entitlements"
    __table_args__ = (
        Index("ix_entitlements_vehicle", "vehicle_id", "state"),
        Index("ix_entitlements_valid_from", "valid_from"),
        Index("ix_entitlements_valid_until", "valid_until"),
        Index(
            "uq_entitlements_one_trial",
            "vehicle_id",
            "feature_id",
            unique=True,
            postgresql_where=text("source = 'trial'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"))
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    code: Mapped[str] = mapped_column(String(40))
    # plan | trial | purchase | subscription | permanent | metered | occurrence
    source: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))
    enabled: Mapped[bool] = mapped_column(default=True)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    # Who it was granted to (None: the plan of a car without owner). Stays with the car when
    # the source is `permanent` or `plan`.
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    offer_id: Mapped[int | None] = mapped_column(ForeignKey("offers.id"))
    purchase_id: Mapped[int | None] = mapped_column(ForeignKey("purchases.id"), index=True)
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))
    occurrence_id: Mapped[int | None] = mapped_column(ForeignKey("occurrences.id"))
    # Metered: the customer's monthly spending cap (None: no cap).
    spending_cap_minor: Mapped[int | None]
    parameters: Mapped[dict[str, object]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Purchase(Base):
    """One checkout of one or several options for one car (`rules.PURCHASE`).

    Written with the customer's Idempotency-Key: a retry finds this row instead of charging
    again. The payment is authorised first, the entitlements are created `delivering` and a
    configuration version is issued; the car's `applied` captures the payment (the purchase
    becomes `active`), its `rejected` or silence past `deadline_at` voids the authorisation
    (`refunded`, with the reason).
    """

    __tablename__ = "purchases"
    __table_args__ = (UniqueConstraint("customer_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"), index=True)
    state: Mapped[str] = mapped_column(String(20))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    # Indexed: billing finds the purchase of a payment (the ledger's revenue per option).
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    net_minor: Mapped[int]
    vat_minor: Mapped[int]
    gross_minor: Mapped[int]
    # The configuration version that carries it to the car, and until when the car may apply it.
    configuration_version: Mapped[int | None]
    deadline_at: Mapped[datetime | None]
    failure_code: Mapped[str | None] = mapped_column(String(60))
    failure_reason: Mapped[str | None] = mapped_column(String(300))
    # The provider's reusable card reference the customer paid with (never a card number):
    # a purchase whose authorisation is settled later is delivered without the customer's
    # retry, and its subscriptions renew with it.
    payment_method: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PurchaseLine(Base):
    __tablename__ = "purchase_lines"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    purchase_id: Mapped[int] = mapped_column(ForeignKey("purchases.id"), index=True)
    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id"))
    code: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(String(200))
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    net_minor: Mapped[int]
    vat_rate_bp: Mapped[int]
    vat_minor: Mapped[int]
    gross_minor: Mapped[int]
    # Metered only: the customer's monthly spending cap (None: no cap).
    spending_cap_minor: Mapped[int | None]
    entitlement_id: Mapped[int | None] = mapped_column(ForeignKey("entitlements.id"))


class Subscription(Base):
    """A monthly or yearly option that renews until cancelled (`rules.SUBSCRIPTION`).

    `payment_method` is the provider's reusable card reference used for renewals (never a
    card number). A failed renewal is retried on a schedule (`attempts`, `next_attempt_at`),
    the customer told each time; after the last attempt the subscription lapses.
    """

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id"))
    code: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20))
    payment_method: Mapped[str] = mapped_column(String(80))
    current_period_start: Mapped[datetime]
    current_period_end: Mapped[datetime]
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Schedule(Base):
    """A planned window (once) or a recurring one (every year, every week) of one option, in
    the customer's time zone: "winter traction from 1 December to 28 February, every winter",
    "power boost every weekend". Each start is an `Occurrence`.

    `charge`: "each" (every occurrence is charged when it starts; a failed charge means it does
    not start and the customer is told) or "upfront" (paid at checkout, once-only schedules).
    """

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id"))
    code: Mapped[str] = mapped_column(String(40))
    recurrence: Mapped[str] = mapped_column(String(10))  # once | yearly | weekly
    timezone: Mapped[str] = mapped_column(String(40))
    # Local wall-clock start and end of the first window (for weekly: its weekday and times).
    start_date: Mapped[date]
    start_time: Mapped[time]
    end_date: Mapped[date]
    end_time: Mapped[time]
    charge: Mapped[str] = mapped_column(String(10))
    payment_method: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(20))  # active | cancelled | finished
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Occurrence(Base):
    """One start of a schedule, in UTC (`rules.OCCURRENCE`); created ahead by the scheduler."""

    __tablename__ = "occurrences"
    __table_args__ = (UniqueConstraint("schedule_id", "starts_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(20))  # planned | started | failed | cancelled
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SweepCursor(Base):
    """How far a periodic sweep has gone (window boundaries): moved in the transaction that
    did the work, so a restarted worker neither loses nor repeats a boundary."""

    __tablename__ = "sweep_cursors"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    swept_until: Mapped[datetime]
    # A pass cut into batches: it sweeps up to `pass_until`, and the cars up to
    # `after_vehicle_id` are done (both None between passes).
    pass_until: Mapped[datetime | None]
    after_vehicle_id: Mapped[int | None] = mapped_column(BigInteger)
    # How many runs the self-rescheduling job has made: the next one's number, carried by its
    # outbox message (and dedupe key), so a stray duplicate finds it stale and does nothing.
    runs: Mapped[int] = mapped_column(BigInteger, default=0)
