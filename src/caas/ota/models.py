"""Tables of over-the-air configuration: every signed version of every car's configuration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class ConfigurationVersion(Base):
    """One signed configuration of one car, and what became of it (`caas.ota.rules.CONFIGURATION`).

    `version` increases strictly per car (issued with the car's row locked); `manifest` is the
    `SignedManifest` exactly as published, so a re-send is byte for byte the same message.
    """

    __tablename__ = "configuration_versions"
    __table_args__ = (
        UniqueConstraint("vehicle_id", "version"),
        Index(
            "ix_configuration_versions_waiting",
            "vehicle_id",
            postgresql_where="state IN ('pending', 'deferred')",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"))
    version: Mapped[int]
    # The `ManifestBody` (JSON) and the whole `SignedManifest` (JSON) as published.
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime]
    # First and latest time the broker acknowledged it (re-sent while the car is silent).
    published_at: Mapped[datetime | None]
    last_published_at: Mapped[datetime | None]
    publish_count: Mapped[int] = mapped_column(default=0)
    # The car's answer: when the platform got it, the car's reason (rejected or deferred) and
    # the features on in the car after it.
    reported_at: Mapped[datetime | None]
    report_reason: Mapped[str | None] = mapped_column(String(200))
    active_features: Mapped[list[str] | None] = mapped_column(JSONB)
    superseded_at: Mapped[datetime | None]
