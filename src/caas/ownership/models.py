"""Tables of a car's change of owner and of its end of life."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Transfer(Base):
    """A car passing from one customer to another (`rules.TRANSFER`).

    `private`: the seller opens it and gets a one-time code (only its keyed hash is kept) that
    the buyer types with the VIN before `code_expires_at`; `dealer`: a dealership records the
    resale between both at once. On completion the registry is told the new holder by a job
    (`registry_state`: pending, recorded, refused; `none` for a car never registered).
    """

    __tablename__ = "ownership_transfers"
    __table_args__ = (
        Index(
            "uq_ownership_transfers_one_open",
            "vehicle_id",
            unique=True,
            postgresql_where=text("state = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # private | dealer
    state: Mapped[str] = mapped_column(String(20))  # open | completed | cancelled
    seller_customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    buyer_customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    dealership_id: Mapped[int | None] = mapped_column(ForeignKey("dealerships.id"))
    created_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # HMAC-SHA256 of the code under a key derived from CAAS_SECRET_KEY (private only).
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    registry_state: Mapped[str] = mapped_column(String(20), default="none")
    registry_answer: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class TransferCodeAttempt(Base):
    """One try at a transfer code, kept even when the request fails: counts towards the limit."""

    __tablename__ = "transfer_code_attempts"
    __table_args__ = (
        Index("ix_transfer_code_attempts_user_at", "user_id", "at"),
        Index("ix_transfer_code_attempts_vin_at", "vin", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    vin: Mapped[str] = mapped_column(String(17))
    at: Mapped[datetime]
    succeeded: Mapped[bool]


class Scrapping(Base):
    """The end of a car's life: why, the authorised treatment facility's certificate, and the
    registry's deregistration (`registry_state` as for a transfer)."""

    __tablename__ = "vehicle_scrappings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    certificate_number: Mapped[str] = mapped_column(String(40))
    owner_customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    scrapped_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    scrapped_at: Mapped[datetime]
    registry_state: Mapped[str] = mapped_column(String(20), default="none")
    registry_answer: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
