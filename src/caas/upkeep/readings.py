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
a restarted worker reads the state back from the table; two replicas racing on the same sample
write it once (the upsert only moves a row to a newer reading); and `propose` refuses a second
open order for a need (its partial unique index is the last guard).

Cost on the hot path: one statement per batch that carries readings, which decides in the
database and writes only a state that changes, a car seen for the first time, or a level older
than `LEVEL_REFRESH` of the car's time (to keep the shown level fresh); it returns only what
was written. Each car's newest reading in a batch counts (a car samples every few seconds, a
batch lasts milliseconds).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from caas.core import outbox
from caas.core.clock import Clock
from caas.core.history import Actor, record
from caas.core.outbox import Handler
from caas.upkeep.readings_models import UpkeepThreshold
from caas.upkeep.thresholds import MARK_OF_SIGNAL, MARKS, Mark

log = structlog.get_logger(__name__)

PROPOSE_TOPIC: Final = "upkeep.propose"
LEVEL_REFRESH: Final = timedelta(minutes=15)
SIGNALS: Final = frozenset(MARK_OF_SIGNAL)

# The hysteresis, decided where the state is: armed trips beyond the trip level, tripped
# re-arms beyond the re-arm level ("beyond": below for a mark that trips below, else above).
# Only rows worth writing are written, only rows written come back.
_OBSERVE: Final = text(
    """
    WITH incoming AS (
        SELECT * FROM unnest(
            CAST(:vehicle_ids AS integer[]), CAST(:platform_ids AS integer[]),
            CAST(:marks AS text[]), CAST(:levels AS double precision[]),
            CAST(:below AS boolean[]), CAST(:ats AS timestamptz[])
        ) AS i (vehicle_id, platform_id, mark, level, below, at)
    ),
    judged AS (
        SELECT i.vehicle_id, i.mark, i.level, i.at, t.trip_level, t.rearm_level,
               l.tripped AS was_tripped, coalesce(l.trips, 0) AS trips_before,
               l.observed_at AS stored_at,
               CASE WHEN coalesce(l.tripped, false)
                    THEN NOT CASE WHEN i.below THEN i.level > t.rearm_level
                                  ELSE i.level < t.rearm_level END
                    ELSE CASE WHEN i.below THEN i.level < t.trip_level
                              ELSE i.level > t.trip_level END
               END AS tripped
        FROM incoming i
        JOIN upkeep_thresholds t ON t.platform_id = i.platform_id AND t.mark = i.mark
        LEFT JOIN upkeep_levels l ON l.vehicle_id = i.vehicle_id AND l.mark = i.mark
        WHERE l.observed_at IS NULL OR i.at > l.observed_at
    ),
    decided AS (
        SELECT * FROM judged
        WHERE was_tripped IS NULL OR tripped <> was_tripped OR at - stored_at >= :refresh
    ),
    written AS (
        INSERT INTO upkeep_levels AS l
            (vehicle_id, mark, level, tripped, trips, observed_at, changed_at)
        SELECT vehicle_id, mark, level, tripped,
               trips_before + CAST(tripped AND NOT coalesce(was_tripped, false) AS integer),
               at, :now
        FROM decided
        ON CONFLICT (vehicle_id, mark) DO UPDATE SET
            level = excluded.level,
            tripped = excluded.tripped,
            trips = excluded.trips,
            observed_at = excluded.observed_at,
            changed_at = CASE WHEN l.tripped <> excluded.tripped
                              THEN excluded.changed_at ELSE l.changed_at END
        WHERE l.observed_at < excluded.observed_at
        RETURNING l.vehicle_id, l.mark, l.trips, l.observed_at
    )
    SELECT j.vehicle_id, j.mark, j.tripped, j.was_tripped, j.level, j.at, j.trip_level,
           j.rearm_level, w.trips, coalesce(w.observed_at, j.stored_at) AS stored_at
    FROM judged j LEFT JOIN written w USING (vehicle_id, mark)
    """
)


@dataclass(frozen=True, slots=True)
class Observation:
    """Readings of one car at one moment (by its clock), by signal name."""

    vehicle_id: int
    platform_id: int
    customer_id: int | None
    vin: str
    readings: Mapping[str, float]
    at: datetime


@dataclass(frozen=True, slots=True)
class _Known:
    tripped: frozenset[str]
    refresh_after: datetime  # by the car's clock


class LevelMemory:
    """What one ingest process learned of the marks and of each car's state, to leave out of
    the database statement the readings that cannot change anything (an armed level short of
    its trip level, a tripped one short of its re-arm level, no refresh due).

    Only a filter: the database decides. When another process moved a car's state, this one
    sends the car again at its next refresh at the latest; marks are read again every
    `MARKS_TTL`. About a hundred bytes per car.
    """

    MARKS_TTL: Final = 60.0  # seconds

    def __init__(self) -> None:
        self._marks: dict[int, dict[str, tuple[float, float]]] = {}
        self._marks_read_at = -self.MARKS_TTL
        self._cars: dict[int, _Known] = {}

    def marks(self, session: Session) -> dict[int, dict[str, tuple[float, float]]]:
        """Every platform's marks: (trip, re-arm) by mark code."""
        if time.monotonic() - self._marks_read_at >= self.MARKS_TTL:
            found: dict[int, dict[str, tuple[float, float]]] = {}
            for row in session.execute(
                select(
                    UpkeepThreshold.platform_id,
                    UpkeepThreshold.mark,
                    UpkeepThreshold.trip_level,
                    UpkeepThreshold.rearm_level,
                )
            ):
                found.setdefault(row.platform_id, {})[row.mark] = (row.trip_level, row.rearm_level)
            self._marks, self._marks_read_at = found, time.monotonic()
        return self._marks

    def unchanged(
        self, session: Session, observation: Observation, mark: Mark, level: float
    ) -> bool:
        """Whether this reading is known to change nothing (not watched, or same state)."""
        levels = self.marks(session).get(observation.platform_id, {}).get(mark.code)
        if levels is None:
            return True
        known = self._cars.get(observation.vehicle_id)
        if known is None or observation.at >= known.refresh_after:
            return False
        tripped = mark.code in known.tripped
        return step(mark, tripped=tripped, level=level, trip=levels[0], rearm=levels[1]) == tripped

    def learn(self, rows: Sequence[Any]) -> None:
        """The cars' states as the statement judged them."""
        by_car: dict[int, list[Any]] = {}
        for row in rows:
            by_car.setdefault(row.vehicle_id, []).append(row)
        for vehicle_id, judged in by_car.items():
            before = self._cars.get(vehicle_id)
            tripped = set(before.tripped) if before else set()
            for row in judged:
                (tripped.add if row.tripped else tripped.discard)(row.mark)
            refresh_after = min(row.stored_at or row.at for row in judged) + LEVEL_REFRESH
            if before is not None and len(judged) < len(MARKS):
                refresh_after = min(refresh_after, before.refresh_after)
            self._cars[vehicle_id] = _Known(frozenset(tripped), refresh_after)


def step(mark: Mark, *, tripped: bool, level: float, trip: float, rearm: float) -> bool:
    """The hysteresis (as `_OBSERVE` applies it): whether the mark is tripped after `level`."""
    if tripped:
        return not mark.rearms(level, rearm)
    return mark.trips(level, trip)


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


def observe(
    session: Session,
    observations: Sequence[Observation],
    *,
    now: datetime,
    memory: LevelMemory | None = None,
) -> list[Crossing]:
    """Move each (car, mark) of the batch by the car's newest reading; queue a proposal job
    per crossing of a trip level, history for both directions. Returns the crossings.

    With `memory` (the ingest process's), readings known to change nothing stay out of the
    statement, so a batch of healthy cars costs no round trip."""
    newest: dict[tuple[int, str], tuple[Observation, float]] = {}
    for observation in observations:
        for signal, value in observation.readings.items():
            mark = MARK_OF_SIGNAL.get(signal)
            if mark is None:
                continue
            key = (observation.vehicle_id, mark.code)
            kept = newest.get(key)
            if kept is None or observation.at > kept[0].at:
                newest[key] = (observation, mark.level(value))
    if memory is not None:
        newest = {
            key: (seen, level)
            for key, (seen, level) in newest.items()
            if not memory.unchanged(session, seen, MARKS[key[1]], level)
        }
    if not newest:
        return []
    items = list(newest.items())
    rows = session.execute(
        _OBSERVE,
        {
            "vehicle_ids": [vehicle_id for (vehicle_id, _), _ in items],
            "platform_ids": [seen.platform_id for _, (seen, _) in items],
            "marks": [mark for (_, mark), _ in items],
            "levels": [level for _, (_, level) in items],
            "below": [MARKS[mark].direction == "below" for (_, mark), _ in items],
            "ats": [seen.at for _, (seen, _) in items],
            "refresh": LEVEL_REFRESH,
            "now": now,
        },
    ).all()
    if memory is not None:
        memory.learn(rows)
    crossings = [
        Crossing(
            vehicle_id=row.vehicle_id,
            mark=MARKS[row.mark],
            level=row.level,
            trip_level=row.trip_level,
            rearm_level=row.rearm_level,
            tripped=row.tripped,
            trips=row.trips,
            at=row.at,
        )
        for row in rows
        if row.trips is not None and row.tripped != bool(row.was_tripped)
    ]
    for crossing in crossings:
        seen, _ = newest[(crossing.vehicle_id, crossing.mark.code)]
        _crossed(session, crossing, seen, now=now)
    return crossings


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
