"""Tables of software releases: the releases, their rollouts and each car's part in one."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, false
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class SoftwareRelease(Base):
    """A version of a platform's car software, with its image and what it is compatible with.

    The image lives under the platform's data directory (`image_path`, relative to it); its
    size and SHA-256 are taken at upload. `signature` (the manifest signing key's, over version,
    sha256, size and models) is made when the release is published
    (`caas.releases.rules.RELEASE`: draft -> published -> withdrawn).
    """

    __tablename__ = "software_releases"
    __table_args__ = (UniqueConstraint("platform_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform_id: Mapped[int] = mapped_column(ForeignKey("platforms.id"))
    version: Mapped[str] = mapped_column(String(20))
    notes: Mapped[str] = mapped_column(Text, default="")
    image_path: Mapped[str] = mapped_column(String(300))
    image_size: Mapped[int] = mapped_column(BigInteger)
    image_sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str | None] = mapped_column(String(100))
    # Compatibility: platform codes, features whose hardware must be fitted, and the oldest
    # software a car may run to take it (None: any).
    models: Mapped[list[str]] = mapped_column(JSONB)
    hardware: Mapped[list[str]] = mapped_column(JSONB)
    min_version: Mapped[str | None] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    published_at: Mapped[datetime | None]
    withdrawn_at: Mapped[datetime | None]


class Rollout(Base):
    """A release sent to the compatible fleet in waves (cumulative percentages of the cars).

    A wave starts when the one before has `success_percent` of its cars installed; the rollout
    halts by itself when `failure_percent` of the cars offered so far failed or rolled back
    (`caas.releases.rules.ROLLOUT`).
    """

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("software_releases.id"), index=True)
    waves: Mapped[list[int]] = mapped_column(JSONB)
    success_percent: Mapped[int]
    failure_percent: Mapped[int]
    state: Mapped[str] = mapped_column(String(20))
    # The wave offered last (1-based); 0 before the start.
    current_wave: Mapped[int] = mapped_column(default=0)
    halt_reason: Mapped[str | None] = mapped_column(String(200))
    # The owner is asked first: a car of a started wave waits (`awaiting_owner`) until its
    # owner accepts, or `auto_install_days` after being asked (None: only on acceptance).
    ask_owner: Mapped[bool] = mapped_column(default=False, server_default=false())
    auto_install_days: Mapped[int | None]
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]
    halted_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class RolloutTarget(Base):
    """One car of a rollout: its wave and how far its update went (`rules.TARGET`)."""

    __tablename__ = "rollout_targets"
    __table_args__ = (
        UniqueConstraint("rollout_id", "vehicle_id"),
        Index("ix_rollout_targets_vehicle_state", "vehicle_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"))
    # Place in the rollout's fixed order (by a hash of the VIN), 0-based, and its wave.
    rank: Mapped[int]
    wave: Mapped[int]
    state: Mapped[str] = mapped_column(String(20))
    offered_at: Mapped[datetime | None]
    asked_at: Mapped[datetime | None]  # the owner was asked (a rollout with `ask_owner`)
    accepted_at: Mapped[datetime | None]  # the owner accepted (None: offered without asking)
    last_step_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(String(200))
