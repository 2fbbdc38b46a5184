"""Every stage event the factory sent that the platform accepted, kept with its payload."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class FactoryEvent(Base):
    """A signed stage event received for an order; its unique `event_id` makes retries no-ops."""

    __tablename__ = "factory_events"
    __table_args__ = (Index("ix_factory_events_sale_sequence", "sale_id", "sequence"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    sale_id: Mapped[int] = mapped_column(ForeignKey("sales.id"))
    sequence: Mapped[int]
    stage: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    # applied: moved the order (or recorded the car); stale: older than what the order knows.
    outcome: Mapped[str] = mapped_column(String(20))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
