"""The registration of a sale's car with the authority of the customer's country."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class Registration(Base):
    """One per sale, updated on every attempt (each attempt also leaves history rows).

    `state` follows `rules.REGISTRATION`: submitted, registered or rejected. The refusal's
    reason and field stay here until the next attempt, so the dealer reads what to correct.
    """

    __tablename__ = "registrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    sale_id: Mapped[int] = mapped_column(ForeignKey("sales.id"), unique=True)
    country: Mapped[str] = mapped_column(ForeignKey("countries.code"))
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(default=0)
    plate: Mapped[str | None] = mapped_column(String(20))
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    # The customer's field to correct (`street`...) and the registry's own name for it.
    rejection_field: Mapped[str | None] = mapped_column(String(40))
    registry_field: Mapped[str | None] = mapped_column(String(60))
    # What the last attempt sent and what the registry answered, as they were on the wire.
    request_payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    response_payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime]
    submitted_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    registered_at: Mapped[datetime | None]
    rejected_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
