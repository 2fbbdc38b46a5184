"""Tables of over-the-air configuration: every signed version of every car's configuration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class ConfigurationPush(Base):
    """One configuration change for many cars at once (a release's wave, a rollout resumed
    after a halt or cancelled, a pass of the window sweep): every version it issued carries its
    id, so the operator follows how far the change has gone (`caas.ota.pushes`).

    `key` names the change where it is requested more than once in several transactions (one
    sweep pass in batches), so all its versions share one push.
    """

    __tablename__ = "configuration_pushes"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(200))
    key: Mapped[str | None] = mapped_column(String(120), unique=True)
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(index=True)


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
    # The many-car change that issued it (None: a change of this car alone).
    push_id: Mapped[int | None] = mapped_column(ForeignKey("configuration_pushes.id"), index=True)
