"""Tables of the car's readings: the operator's marks per model and each car's level state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Double, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from caas.core.db import Base


class UpkeepThreshold(Base):
    """Where a reading trips a need on one platform, and where it re-arms (`thresholds.MARKS`).

    Levels are in the mark's unit (`thresholds.Mark.unit`). A mark that trips below its level
    re-arms above `rearm_level`, one that trips above re-arms below: the gap between them is
    the hysteresis that keeps a wavering level from making an order per sample.
    """

    __tablename__ = "upkeep_thresholds"
    __table_args__ = (UniqueConstraint("platform_id", "mark"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform_id: Mapped[int] = mapped_column(ForeignKey("platforms.id"))
    mark: Mapped[str] = mapped_column(String(30))
    trip_level: Mapped[float] = mapped_column(Double)
    rearm_level: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[datetime]


class UpkeepLevel(Base):
    """One car's last known level of one mark, and whether the mark is tripped.

    Written when the state changes (armed -> tripped, tripped -> armed) and otherwise at most
    every `readings.LEVEL_REFRESH` of the car's time, so telemetry ingest stays a read.
    `trips` counts the crossings: the proposal job of a crossing is keyed by it.
    """

    __tablename__ = "upkeep_levels"

    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"), primary_key=True)
    mark: Mapped[str] = mapped_column(String(30), primary_key=True)
    level: Mapped[float] = mapped_column(Double)
    tripped: Mapped[bool]
    trips: Mapped[int]
    observed_at: Mapped[datetime]  # the reading's time, by the car's clock
    changed_at: Mapped[datetime]  # when `tripped` last changed (or the row was made)
