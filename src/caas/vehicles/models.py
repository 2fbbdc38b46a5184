"""The car's record, born when the factory builds it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Vehicle(Base):
    __tablename__ = "vehicles"

    id: Mapped[int] = mapped_column(primary_key=True)
    vin: Mapped[str] = mapped_column(String(17), unique=True)
    sale_id: Mapped[int | None] = mapped_column(ForeignKey("sales.id"), unique=True)
    platform_id: Mapped[int] = mapped_column(ForeignKey("platforms.id"))
    owner_customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    # Ed25519 public key of the car (PEM/base64 as the factory sent it); pins its identity.
    public_key: Mapped[str] = mapped_column(Text)
    software_version: Mapped[str] = mapped_column(String(20))
    plate: Mapped[str | None] = mapped_column(String(20), unique=True)
    registered_country: Mapped[str | None] = mapped_column(ForeignKey("countries.code"))
    built_at: Mapped[datetime]
    registered_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
