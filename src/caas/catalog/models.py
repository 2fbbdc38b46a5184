"""Tables of what the maker sells, and where."""

from __future__ import annotations

from datetime import date

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Country(Base):
    __tablename__ = "countries"

    code: Mapped[str] = mapped_column(String(2), primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    currency: Mapped[str] = mapped_column(String(3))
    language: Mapped[str] = mapped_column(String(8))
    # Shares are basis points (2100 = 21 %): integers, so no float ever touches money. The VAT
    # rate is not here: it changes on given days (`vat_rates`, `caas.billing.vat.rate_at`).
    deposit_share_bp: Mapped[int]
    invoice_series: Mapped[str] = mapped_column(String(10))


class VatRate(Base):
    """A country's VAT rate from `valid_from` (a day in the country) until the next row's."""

    __tablename__ = "vat_rates"

    country: Mapped[str] = mapped_column(ForeignKey("countries.code"), primary_key=True)
    valid_from: Mapped[date] = mapped_column(primary_key=True)
    rate_bp: Mapped[int]


class Platform(Base):
    """A base platform: the model the customer owns, fully operational on its own."""

    __tablename__ = "platforms"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text)
    # The maintenance plan: a service every N km or M months, whichever comes first.
    service_every_km: Mapped[int]
    service_every_months: Mapped[int]
    software_version: Mapped[str] = mapped_column(String(20))


class PlatformPrice(Base):
    __tablename__ = "platform_prices"
    __table_args__ = (UniqueConstraint("platform_id", "country"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform_id: Mapped[int] = mapped_column(ForeignKey("platforms.id"))
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    net_minor: Mapped[int]
    # Scheduled maintenance for the whole service period, when the plan includes it.
    maintenance_net_minor: Mapped[int]


class Feature(Base):
    """An optional feature a platform supports, as the operator manages it in the catalog.

    `names` and `descriptions` map a language ("es", "en", ...) to the text shown in the store
    (`name`/`description` are the fallback); `requires`/`conflicts` list other features' codes
    of the same platform; `countries` lists where it may be sold (None: everywhere the platform
    is sold); `requires_maintenance`: it can only be bought or renewed while the car follows
    the official maintenance plan; `min_software_version`: the oldest car software that runs it.
    """

    __tablename__ = "features"
    __table_args__ = (UniqueConstraint("platform_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform_id: Mapped[int] = mapped_column(ForeignKey("platforms.id"))
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(40))
    needs_hardware: Mapped[bool] = mapped_column(default=False)
    parameters: Mapped[dict[str, object]] = mapped_column(JSONB, default=dict)
    names: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    descriptions: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    min_software_version: Mapped[str | None] = mapped_column(String(20))
    requires: Mapped[list[str]] = mapped_column(JSONB, default=list)
    conflicts: Mapped[list[str]] = mapped_column(JSONB, default=list)
    countries: Mapped[list[str] | None] = mapped_column(JSONB)
    requires_maintenance: Mapped[bool] = mapped_column(default=False)
    # Withdrawn from sale: owned entitlements run on, nothing new is sold.
    active: Mapped[bool] = mapped_column(default=True)


class FeaturePrice(Base):
    """The price of including a feature for the whole service period in a sale."""

    __tablename__ = "feature_prices"
    __table_args__ = (UniqueConstraint("feature_id", "country"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    plan_net_minor: Mapped[int]
