"""Each car's broker credentials: only a hash at rest, and the new password in transit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class BrokerCredential(Base):
    """The car's account on the broker (username and client id: its VIN)."""

    __tablename__ = "broker_credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    vin: Mapped[str] = mapped_column(String(17), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    # The newest password, encrypted with a key derived from CAAS_SECRET_KEY, only until the
    # worker has given it to the broker; then wiped (caas.iot.service explains why).
    pending_secret: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(default=1)
    # The birth password again, encrypted the same way, only until the factory has the car's
    # provisioning bundle to flash into it (`caas.factory.jobs.send_provisioning`); then wiped.
    bundle_secret: Mapped[str | None] = mapped_column(Text)
    bundle_delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    # The car was scrapped: its account is removed from the broker and never issued again.
    revoked_at: Mapped[datetime | None]
