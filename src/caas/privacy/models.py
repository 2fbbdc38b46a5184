"""Tables of privacy: the customer's consents, and the mark an erased account keeps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
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


class Erasure(Base):
    """A customer's account erased at their request: when, and what the law made us keep.

    The customer's row stays (invoices, the ledger and the history point at it) with its
    personal fields replaced; this row marks it erased and says what was retained and why.
    """

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), unique=True)
    erased_at: Mapped[datetime]
    # {"reason": RETENTION_NOTE, "invoices": [numbers], "ledger_entries": count}
    retained: Mapped[dict[str, Any]] = mapped_column(JSONB)
