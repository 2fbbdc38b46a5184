"""The transport of a registered car to the customer's address."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Delivery(Base):
    """One per sale; `state` follows `rules.DELIVERY`: scheduled, in_transit, delivered.

    The address is copied from the customer when the delivery is scheduled: the carrier
    drives to where it was told, even if the customer's file changes afterwards.
    """

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    sale_id: Mapped[int] = mapped_column(ForeignKey("sales.id"), unique=True)
    state: Mapped[str] = mapped_column(String(20))
    scheduled_for: Mapped[date]
    carrier: Mapped[str] = mapped_column(String(80))
    tracking_number: Mapped[str | None] = mapped_column(String(60))
    recipient: Mapped[str] = mapped_column(String(200))
    street: Mapped[str] = mapped_column(String(200))
    postal_code: Mapped[str] = mapped_column(String(20))
    city: Mapped[str] = mapped_column(String(120))
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    created_at: Mapped[datetime]
    scheduled_at: Mapped[datetime]
    dispatched_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    @property
    def address(self) -> str:
        """The address on one line, as the carrier's note and the customer's e-mail show it."""
        return f"{self.street}, {self.postal_code} {self.city}"
