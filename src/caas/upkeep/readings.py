"""Detection: the car's readings against its model's marks, one proposal per crossing.

Telemetry ingest hands each batch's readings to `observe`, inside the batch's transaction.
Per (car, mark) `upkeep_levels` keeps a hysteresis state: armed until the level crosses the
trip level, then tripped until it goes back beyond the re-arm level (a fill, a service). Only
the armed -> tripped step makes a proposal, so a level wavering around its mark makes one.

The proposal itself (`caas.upkeep.orders.propose`: a quote, free slots, the customer told or
the standing consent applied) runs as an outbox job queued in the same transaction as the
step, keyed by (car, mark, crossing number), not in the ingest transaction: a telemetry batch
carries many cars, and one car's proposal must neither slow their ingest nor roll it back when
it fails; the job is retried on its own. The step and its job commit together or not at all;
two ingest replicas racing on the same sample make the same key (one job); a restarted worker
reads the state back from the table; and `propose` refuses a second open order for a need
(its partial unique index is the last guard).

Cost on the hot path: one SELECT per batch that carries readings (the marks of the batch's
models joined with their cars' levels); a write only when a state changes, for a car seen for
the first time, or every `LEVEL_REFRESH` of a car's time to keep the shown level fresh.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, cast

import structlog
from sqlalchemy import (
    Boolean,
    DateTime,
    Double,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    case,
    column,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import Session

from caas.core import outbox
from caas.core.clock import Clock
from caas.core.history import Actor, record
from caas.core.outbox import Handler
from caas.upkeep.readings_models import UpkeepLevel, UpkeepThreshold
from caas.upkeep.thresholds import MARK_OF_SIGNAL, MARKS, Mark

log = structlog.get_logger(__name__)

PROPOSE_TOPIC: Final = "upkeep.propose"
LEVEL_REFRESH: Final = timedelta(minutes=15)
SIGNALS: Final = frozenset(MARK_OF_SIGNAL)

_LEVELS: Final = cast(Table, UpkeepLevel.__table__)
_UTC_TIME: Final = DateTime(timezone=True)


@dataclass(frozen=True, slots=True)
class Observation:
    """Readings of one car at one moment (by its clock), by signal name."""

    vehicle_id: int
    platform_id: int
    customer_id: int | None
    vin: str
    readings: Mapping[str, float]
    at: datetime


@dataclass(slots=True)
class _State:
    """One (car, mark) as stored, and as the batch moves it."""

    level: float | None
    tripped: bool
    trips: int
    observed_at: datetime | None
    stored_tripped: bool | None  # None: no row yet
    stored_at: datetime | None

    def worth_writing(self) -> bool:
        """A new row, a changed state, or a level older than `LEVEL_REFRESH` in the table."""
        if self.stored_tripped is None or self.stored_tripped != self.tripped:
            return True
        return (
            self.observed_at is not None
            and self.stored_at is not None
            and self.observed_at - self.stored_at >= LEVEL_REFRESH
        )


@dataclass(frozen=True, slots=True)
class Crossing:
    """A mark the car crossed: tripped (a need to propose) or re-armed."""

    vehicle_id: int
    mark: Mark
    level: float
    trip_level: float
    rearm_level: float
    tripped: bool
    trips: int
    at: datetime


def step(mark: Mark, *, tripped: bool, level: float, trip: float, rearm: float) -> bool:
    """The hysteresis: whether the mark is tripped after `level` was read."""
    if tripped:
        return not mark.rearms(level, rearm)
    return mark.trips(level, trip)


def observe(
    session: Session, observations: Sequence[Observation], *, now: datetime
) -> list[Crossing]:
    """Move each (car, mark) of the batch through its readings in the car's time order; queue
    a proposal job per crossing of a trip level. Returns the crossings (both directions)."""
    watched = [o for o in observations if SIGNALS.intersection(o.readings)]
    if not watched:
        return []
    cars = {o.vehicle_id: o for o in watched}
    marks = _marks_of(session, {(o.vehicle_id, o.platform_id) for o in watched})
    if not marks:
        return []
    crossings: list[Crossing] = []
    writes: dict[tuple[int, str], _State] = {}
    by_car: dict[int, list[Observation]] = defaultdict(list)
    for observation in watched:
        by_car[observation.vehicle_id].append(observation)
    for vehicle_id, seen in by_car.items():
        seen.sort(key=lambda o: o.at)
        for (code, trip, rearm), state in marks.get(vehicle_id, {}).items():
            mark = MARKS[code]
            moved = False
            for observation in seen:
                value = observation.readings.get(mark.signal)
                if value is None or (
                    state.observed_at is not None and observation.at <= state.observed_at
                ):
                    continue  # older than what is kept (batches may arrive out of order)
                level = mark.level(value)
                tripped = step(mark, tripped=state.tripped, level=level, trip=trip, rearm=rearm)
                if tripped != state.tripped:
                    state.trips += int(tripped)
                    crossings.append(
                        Crossing(
                            vehicle_id,
                            mark,
                            level,
                            trip,
                            rearm,
                            tripped,
                            state.trips,
                            observation.at,
                        )
                    )
                state.level, state.tripped, state.observed_at, moved = (
                    level,
                    tripped,
                    observation.at,
                    True,
                )
            if moved and state.worth_writing():
                writes[(vehicle_id, code)] = state
    if writes:
        _store(session, writes, now=now)
    for crossing in crossings:
        _crossed(session, crossing, cars[crossing.vehicle_id], now=now)
    return crossings


def _marks_of(
    session: Session, cars: set[tuple[int, int]]
) -> dict[int, dict[tuple[str, float, float], _State]]:
    """For each car, its model's marks with the car's stored state (one statement)."""
    pairs = sorted(cars)
    source = (
        func.unnest(
            bindparam("vehicle_ids", [v for v, _ in pairs], type_=ARRAY(Integer())),
            bindparam("platform_ids", [p for _, p in pairs], type_=ARRAY(Integer())),
        )
        .table_valued(column("vehicle_id", Integer()), column("platform_id", Integer()))
        .render_derived()
    )
    query = (
        select(
            source.c.vehicle_id,
            UpkeepThreshold.mark,
            UpkeepThreshold.trip_level,
            UpkeepThreshold.rearm_level,
            UpkeepLevel.level,
            UpkeepLevel.tripped,
            UpkeepLevel.trips,
            UpkeepLevel.observed_at,
        )
        .select_from(source)
        .join(UpkeepThreshold, UpkeepThreshold.platform_id == source.c.platform_id)
        .outerjoin(
            UpkeepLevel,
            and_(
                UpkeepLevel.vehicle_id == source.c.vehicle_id,
                UpkeepLevel.mark == UpkeepThreshold.mark,
            ),
        )
    )
    found: dict[int, dict[tuple[str, float, float], _State]] = defaultdict(dict)
    for row in session.execute(query):
        if row.mark not in MARKS:
            continue
        found[row.vehicle_id][(row.mark, row.trip_level, row.rearm_level)] = _State(
            level=row.level,
            tripped=bool(row.tripped),
            trips=row.trips or 0,
            observed_at=row.observed_at,
            stored_tripped=row.tripped,
            stored_at=row.observed_at,
        )
    return found


def _store(session: Session, writes: dict[tuple[int, str], _State], *, now: datetime) -> None:
    """The states worth keeping, in one statement; a row already holding a newer reading
    (another replica's batch) is left as it is."""
    items = sorted(writes.items())
    columns: dict[str, tuple[Any, list[Any]]] = {
        "vehicle_id": (Integer(), [vehicle_id for (vehicle_id, _), _ in items]),
        "mark": (String(), [mark for (_, mark), _ in items]),
        "level": (Double(), [state.level for _, state in items]),
        "tripped": (Boolean(), [state.tripped for _, state in items]),
        "trips": (Integer(), [state.trips for _, state in items]),
        "observed_at": (_UTC_TIME, [state.observed_at for _, state in items]),
    }
    source = (
        func.unnest(*(bindparam(name, type_=ARRAY(kind)) for name, (kind, _) in columns.items()))
        .table_valued(*(column(name, kind) for name, (kind, _) in columns.items()))
        .render_derived()
    )
    statement = insert(_LEVELS).from_select(
        [*columns, "changed_at"],
        select(*(source.c[name] for name in columns), bindparam("now", now, type_=_UTC_TIME)),
    )
    new, old = statement.excluded, _LEVELS.c
    session.connection().execute(
        statement.on_conflict_do_update(
            index_elements=["vehicle_id", "mark"],
            set_={
                "level": new.level,
                "tripped": new.tripped,
                "trips": new.trips,
                "observed_at": new.observed_at,
                "changed_at": case(
                    (old.tripped != new.tripped, new.changed_at), else_=old.changed_at
                ),
            },
            where=old.observed_at < new.observed_at,
        ),
        {name: values for name, (_, values) in columns.items()},
    )


def _crossed(session: Session, crossing: Crossing, car: Observation, *, now: datetime) -> None:
    """History of the crossing in the owner's file; a trip also queues its proposal."""
    mark = crossing.mark
    record(
        session,
        at=now,
        actor=Actor(kind="vehicle", label=car.vin),
        subject_type="vehicle",
        subject_id=crossing.vehicle_id,
        customer_id=car.customer_id,
        event="upkeep.mark_tripped" if crossing.tripped else "upkeep.mark_rearmed",
        from_state="tripped" if not crossing.tripped else "armed",
        to_state="tripped" if crossing.tripped else "armed",
        details={
            "vin": car.vin,
            "mark": mark.code,
            "need": mark.need,
            "signal": mark.signal,
            "level": round(crossing.level, 3),
            "unit": mark.unit,
            "trip_level": crossing.trip_level,
            "rearm_level": crossing.rearm_level,
            "read_at": crossing.at.isoformat(),
        },
    )
    if not crossing.tripped:
        return
    log.info("upkeep.mark_tripped", vin=car.vin, mark=mark.code, level=crossing.level)
    outbox.enqueue(
        session,
        topic=PROPOSE_TOPIC,
        payload={
            "vehicle_id": crossing.vehicle_id,
            "vin": car.vin,
            "need": mark.need,
            "detail": {
                "mark": mark.code,
                "signal": mark.signal,
                "level": round(crossing.level, 3),
                "unit": mark.unit,
                "trip_level": crossing.trip_level,
                "rearm_level": crossing.rearm_level,
                "read_at": crossing.at.isoformat(),
                "crossing": crossing.trips,
            },
        },
        dedupe_key=f"{PROPOSE_TOPIC}:{crossing.vehicle_id}:{mark.code}:{crossing.trips}",
        now=now,
    )


def levels_of(session: Session, vehicle_id: int) -> dict[str, UpkeepLevel]:
    """The car's stored levels by mark (what the pages show)."""
    rows = session.scalars(select(UpkeepLevel).where(UpkeepLevel.vehicle_id == vehicle_id))
    return {row.mark: row for row in rows}


def propose_job(session: Session, payload: Mapping[str, Any], *, now: datetime) -> None:
    """Propose the fix of a crossing (`caas.upkeep.orders.propose`); nothing when the car
    already has an open order for the need."""
    from caas.upkeep import orders

    order = orders.propose(
        session,
        vehicle_id=int(payload["vehicle_id"]),
        need=str(payload["need"]),
        detail=dict(payload["detail"]),
        actor=Actor(kind="vehicle", label=str(payload["vin"])),
        now=now,
    )
    log.info(
        "upkeep.proposed" if order is not None else "upkeep.already_open",
        vin=payload["vin"],
        need=payload["need"],
    )


def handlers(clock: Clock) -> dict[str, Handler]:
    def propose(session: Session, payload: dict[str, Any]) -> None:
        propose_job(session, payload, now=clock.now())

    return {PROPOSE_TOPIC: propose}
