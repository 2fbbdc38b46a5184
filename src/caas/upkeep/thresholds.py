"""The operator's marks per model: which reading trips which need, and where it re-arms.

A mark is one reading of the car (a COVESA VSS signal where VSS has one) with a direction:
washer fluid trips when it falls below its level and re-arms when it is filled above its
re-arm level; brake pad wear trips when it rises above its level and re-arms below. The
periodic service has two marks (distance and time to service), either of which trips it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from caas.catalog.models import Platform
from caas.core.errors import InvalidInput
from caas.core.history import Actor, record
from caas.upkeep.readings_models import UpkeepThreshold

Direction = Literal["below", "above"]


@dataclass(frozen=True, slots=True)
class Mark:
    """A reading the platform watches: its signal, the need it trips and its unit."""

    code: str
    need: str  # `caas.upkeep.rules.NEEDS`
    signal: str
    vss: bool  # whether `signal` is a COVESA VSS signal
    unit: str
    direction: Direction  # trips when the level goes below / above the trip level
    scale: float  # level in `unit` = signal value * scale
    lowest: float
    highest: float | None
    default_trip: float
    default_rearm: float

    def level(self, value: float) -> float:
        return value * self.scale

    def trips(self, level: float, trip: float) -> bool:
        return level < trip if self.direction == "below" else level > trip

    def rearms(self, level: float, rearm: float) -> bool:
        return level > rearm if self.direction == "below" else level < rearm


MARKS: Final[dict[str, Mark]] = {
    mark.code: mark
    for mark in (
        Mark("service_distance", "service", "Vehicle.Service.DistanceToService", True, "km",
             "below", 1.0, -1_000_000, None, 1500, 5000),
        Mark("service_time", "service", "Vehicle.Service.TimeToService", True, "days",
             "below", 1 / 86_400, -10_000, None, 30, 90),
        Mark("washer_fluid", "washer_fluid", "Vehicle.Body.Windshield.Front.WasherFluid.Level",
             True, "%", "below", 1.0, 0, 100, 15, 40),
        Mark("adblue", "adblue",
             "Vehicle.Powertrain.CombustionEngine.DieselExhaustFluid.Level", True, "%",
             "below", 1.0, 0, 100, 10, 50),
        Mark("tyre_tread", "tyre_tread", "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.TreadDepth",
             False, "mm", "below", 1.0, 0, 20, 3.0, 6.0),
        Mark("brake_pads", "brake_pads", "Vehicle.Chassis.Axle.Row1.Wheel.Left.Brake.PadWear",
             True, "% worn", "above", 1.0, 0, 100, 80, 30),
        Mark("battery_12v", "battery_12v", "Vehicle.LowVoltageBattery.StateOfHealth", False,
             "%", "below", 1.0, 0, 100, 70, 85),
    )
}  # fmt: skip

MARK_OF_SIGNAL: Final[dict[str, Mark]] = {mark.signal: mark for mark in MARKS.values()}


@dataclass(frozen=True, slots=True)
class Threshold:
    """One mark's levels on one platform; None while the operator has not set it (not
    watched on that model)."""

    mark: Mark
    trip_level: float | None
    rearm_level: float | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ThresholdChange:
    mark: str
    trip_level: float
    rearm_level: float


def check(change: ThresholdChange, index: int = 0) -> Mark:
    """The mark of a valid change; InvalidInput naming the field at fault otherwise."""
    where = f"marks.{index}"
    mark = MARKS.get(change.mark)
    if mark is None:
        raise InvalidInput(
            f"no mark {change.mark!r}; one of {', '.join(MARKS)}",
            field=f"{where}.mark",
            code="upkeep.unknown_mark",
        )
    for name, value in (("trip_level", change.trip_level), ("rearm_level", change.rearm_level)):
        if value < mark.lowest or (mark.highest is not None and value > mark.highest):
            top = "" if mark.highest is None else f" to {mark.highest:g}"
            raise InvalidInput(
                f"{mark.code}: {name} must be from {mark.lowest:g}{top} {mark.unit}",
                field=f"{where}.{name}",
                code="upkeep.level_out_of_range",
            )
    if not mark.rearms(change.rearm_level, change.trip_level):
        side = "above" if mark.direction == "below" else "below"
        raise InvalidInput(
            f"{mark.code} trips {mark.direction} {change.trip_level:g} {mark.unit}: it must "
            f"re-arm {side} that level, or a wavering reading would order again and again",
            field=f"{where}.rearm_level",
            code="upkeep.rearm_not_beyond_trip",
        )
    return mark


def thresholds_of(session: Session, platform: Platform) -> list[Threshold]:
    """Every mark on `platform`, in `MARKS` order, set or not."""
    rows = {
        row.mark: row
        for row in session.scalars(
            select(UpkeepThreshold).where(UpkeepThreshold.platform_id == platform.id)
        )
    }
    shown = []
    for code, mark in MARKS.items():
        row = rows.get(code)
        shown.append(
            Threshold(
                mark,
                row.trip_level if row else None,
                row.rearm_level if row else None,
                row.updated_at if row else None,
            )
        )
    return shown


def set_thresholds(
    session: Session,
    platform: Platform,
    changes: Iterable[ThresholdChange],
    *,
    actor: Actor,
    now: datetime,
) -> list[Threshold]:
    """Set the listed marks on `platform` (others stay as they are), after checking them all:
    one invalid change changes nothing. Each mark that changed leaves a history row."""
    checked = [(check(change, index), change) for index, change in enumerate(changes)]
    if len({mark.code for mark, _ in checked}) != len(checked):
        raise InvalidInput("a mark is listed twice", field="marks", code="upkeep.mark_twice")
    before = {t.mark.code: t for t in thresholds_of(session, platform)}
    for mark, change in checked:
        old = before[mark.code]
        if (old.trip_level, old.rearm_level) == (change.trip_level, change.rearm_level):
            continue
        statement = insert(UpkeepThreshold).values(
            platform_id=platform.id,
            mark=mark.code,
            trip_level=change.trip_level,
            rearm_level=change.rearm_level,
            updated_at=now,
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["platform_id", "mark"],
                set_={
                    "trip_level": statement.excluded.trip_level,
                    "rearm_level": statement.excluded.rearm_level,
                    "updated_at": statement.excluded.updated_at,
                },
            )
        )
        record(
            session,
            at=now,
            actor=actor,
            subject_type="platform",
            subject_id=platform.id,
            event="upkeep.threshold_set",
            details={
                "platform": platform.code,
                "mark": mark.code,
                "trip_level": change.trip_level,
                "rearm_level": change.rearm_level,
                "before": (
                    None
                    if old.trip_level is None
                    else {"trip_level": old.trip_level, "rearm_level": old.rearm_level}
                ),
            },
        )
    return thresholds_of(session, platform)


def load_defaults(session: Session, platform_ids: Mapping[str, int], *, now: datetime) -> None:
    """Every mark at its default levels on the given platforms where none is set yet (the
    demo's and a new deployment's starting point; the operator changes them)."""
    rows = [
        {
            "platform_id": platform_id,
            "mark": mark.code,
            "trip_level": mark.default_trip,
            "rearm_level": mark.default_rearm,
            "updated_at": now,
        }
        for platform_id in platform_ids.values()
        for mark in MARKS.values()
    ]
    if rows:
        session.execute(insert(UpkeepThreshold).values(rows).on_conflict_do_nothing())
