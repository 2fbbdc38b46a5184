"""Tables of consent: one row per customer and purpose once the customer has chosen."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Consent(Base):
    """The customer's current answer for one purpose; no row means never given (off).

    Each change is kept in the history (`consent.granted`, `consent.withdrawn`), so this row
    only needs the present.
    """

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("customer_id", "purpose"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    purpose: Mapped[str] = mapped_column(String(40))
    granted: Mapped[bool]
    changed_at: Mapped[datetime]
