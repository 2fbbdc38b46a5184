"""What the cars report, stored: telemetry, usage of metered features and online status.

The worker's MQTT bridge (`caas.iot.bridge`) hands over batches of messages already parsed
(`caas.protocol.mqtt`); each function here writes one batch with a fixed, small number of
statements whatever its size (the arrays of a batch are unnested in one INSERT), and commits
nothing: the bridge commits each batch as one transaction.

- Idempotent: a message the car sent twice (QoS 1 redelivery, a bridge retrying a batch) is
  stored once, by (VIN, seq) (telemetry: by (VIN, at, seq), see `TelemetrySample`).
- Only what the service needs is kept unless the owner consented to more
  (`caas.privacy`): without `driving_style` no speed nor further readings, without
  `location_history` no position. Consent is read with every batch, so withdrawing it stops
  the storing from the next batch on.
- The levels upkeep watches go to `caas.upkeep.readings.observe` in the batch's transaction
  (one more statement for a batch with a reading that may change a mark).
- The twin's latest state (`VehicleState`) follows the newest message; the odometer never goes
  back; a new software version reported by the car updates the car's record and its history.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

import structlog
from prometheus_client import Counter
from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Double,
    String,
    Table,
    and_,
    bindparam,
    case,
    column,
    func,
    not_,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.type_api import TypeEngine

from caas.core.history import Actor, record
from caas.privacy import service as privacy
from caas.privacy.rules import DRIVING_STYLE, LOCATION_HISTORY, Purpose
from caas.protocol.mqtt import Status, Telemetry, UsageEvent, status_order
from caas.upkeep import readings as upkeep
from caas.vehicles.models import FeatureUsage, TelemetrySample, Vehicle, VehicleState

log = structlog.get_logger(__name__)

INGESTED = Counter(
    "caas_vehicle_messages_ingested_total",
    "Messages from cars handed to the ingest, by what became of them",
    ["kind", "outcome"],  # outcome: stored, duplicate, unknown_vehicle, stale
)

_UTC_TIME: Final = DateTime(timezone=True)
# The tables themselves: Core statements, so a batch is one statement (no ORM bulk mode).
_SAMPLES: Final = cast(Table, TelemetrySample.__table__)
_USAGE: Final = cast(Table, FeatureUsage.__table__)
_STATE: Final = cast(Table, VehicleState.__table__)


@dataclass(frozen=True, slots=True)
class _Car:
    id: int
    vin: str
    owner_customer_id: int | None
    software_version: str
    telemetry_at: datetime | None
    telemetry_seq: int | None
    status_at: datetime | None
    status_session: int | None
    online: bool | None
    platform_id: int


def _cars(session: Session, vins: Iterable[str]) -> dict[str, _Car]:
    """The known cars among `vins`, with their latest reported moments (one query)."""
    query = (
        select(
            Vehicle.id,
            Vehicle.vin,
            Vehicle.owner_customer_id,
            Vehicle.software_version,
            VehicleState.telemetry_at,
            VehicleState.telemetry_seq,
            VehicleState.status_at,
            VehicleState.status_session,
            VehicleState.online,
            Vehicle.platform_id,
        )
        .outerjoin(VehicleState, VehicleState.vehicle_id == Vehicle.id)
        .where(Vehicle.vin.in_(sorted(set(vins))))
    )
    return {row.vin: _Car(**row._mapping) for row in session.execute(query)}


def _unnest(columns: dict[str, tuple[TypeEngine[Any], list[Any]]]) -> tuple[Any, dict[str, Any]]:
    """A FROM clause of one row per element of equally long arrays, and its parameters: a
    whole batch in one statement of constant text (PostgreSQL's multi-array `unnest`)."""
    source = (
        func.unnest(*(bindparam(name, type_=ARRAY(kind)) for name, (kind, _) in columns.items()))
        .table_valued(*(column(name, kind) for name, (kind, _) in columns.items()))
        .render_derived()
    )
    return source, {name: values for name, (_, values) in columns.items()}


def _count(kind: str, outcome: str, amount: int) -> None:
    if amount:
        INGESTED.labels(kind, outcome).inc(amount)


# --- telemetry ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Kept:
    """A telemetry sample reduced to what the owner allows us to keep."""

    sample: Telemetry
    car: _Car
    speed_kmh: float | None
    readings: dict[str, float] | None
    latitude: float | None
    longitude: float | None


def _keep(sample: Telemetry, car: _Car, purposes: frozenset[Purpose]) -> _Kept:
    style = DRIVING_STYLE in purposes
    position = sample.location if LOCATION_HISTORY in purposes else None
    return _Kept(
        sample=sample,
        car=car,
        speed_kmh=sample.speed_kmh if style else None,
        readings=(sample.extra or None) if style else None,
        latitude=position[0] if position else None,
        longitude=position[1] if position else None,
    )


def _newer(at: datetime, seq: int, than_at: datetime | None, than_seq: int | None) -> bool:
    if than_at is None:
        return True
    return (at, seq) > (than_at, than_seq if than_seq is not None else -1)


def store_telemetry(
    session: Session,
    items: Sequence[Telemetry],
    *,
    now: datetime,
    upkeep_memory: upkeep.LevelMemory | None = None,
) -> int:
    """Store a batch of telemetry; returns how many samples were new.

    `upkeep_memory`: the ingest process's `caas.upkeep.readings.LevelMemory`, which spares
    upkeep's statement when no reading of the batch can change a mark.

    Samples of unknown cars are dropped; duplicates are dropped by the unique key. Statements:
    the cars, the owners' consents (when a car has an owner), the samples, the latest state;
    plus one update and history row per car whose software version changed.
    """
    if not items:
        return 0
    cars = _cars(session, (item.vin for item in items))
    owners = {car.owner_customer_id for car in cars.values() if car.owner_customer_id}
    consents = privacy.granted_purposes(session, owners)
    kept = [
        _keep(item, car, consents.get(car.owner_customer_id or 0, frozenset()))
        for item in items
        if (car := cars.get(item.vin)) is not None
    ]
    _count("telemetry", "unknown_vehicle", len(items) - len(kept))
    if not kept:
        return 0
    stored = _insert_samples(session, kept, now=now)
    _count("telemetry", "stored", stored)
    _count("telemetry", "duplicate", len(kept) - stored)
    newest: dict[int, _Kept] = {}
    for row in kept:
        best = newest.get(row.car.id)
        if best is None or (row.sample.at, row.sample.seq) > (best.sample.at, best.sample.seq):
            newest[row.car.id] = row
    _upsert_latest(session, list(newest.values()), now=now)
    _upkeep_readings(session, kept, now=now, memory=upkeep_memory)
    for row in newest.values():
        car, sample = row.car, row.sample
        if _newer(sample.at, sample.seq, car.telemetry_at, car.telemetry_seq):
            _software_reported(session, car, sample.software_version, now=now)
    return stored


def _upkeep_readings(
    session: Session, kept: list[_Kept], *, now: datetime, memory: upkeep.LevelMemory | None
) -> None:
    """The levels upkeep watches (fluids, wear, service due) go to its detection whatever the
    owner's optional consents: looking after the car is the service itself (`SERVICE`).
    Duplicates are harmless: detection ignores readings not newer than the level it keeps."""
    upkeep.observe(
        session,
        [
            upkeep.Observation(
                vehicle_id=row.car.id,
                platform_id=row.car.platform_id,
                customer_id=row.car.owner_customer_id,
                vin=row.car.vin,
                readings=row.sample.extra,
                at=row.sample.at,
            )
            for row in kept
            if row.sample.extra
        ],
        now=now,
        memory=memory,
    )


def _insert_samples(session: Session, kept: list[_Kept], *, now: datetime) -> int:
    source, params = _unnest(
        {
            "vin": (String(), [row.car.vin for row in kept]),
            "seq": (BigInteger(), [row.sample.seq for row in kept]),
            "at": (_UTC_TIME, [row.sample.at for row in kept]),
            "odometer_km": (Double(), [row.sample.odometer_km for row in kept]),
            "software_version": (String(), [row.sample.software_version for row in kept]),
            "parked": (Boolean(), [row.sample.parked for row in kept]),
            "battery_percent": (Double(), [row.sample.battery_percent for row in kept]),
            "speed_kmh": (Double(), [row.speed_kmh for row in kept]),
            "readings": (String(), [_json(row.readings) for row in kept]),
            "latitude": (Double(), [row.latitude for row in kept]),
            "longitude": (Double(), [row.longitude for row in kept]),
        }
    )
    columns = [name for name in params if name != "readings"]
    statement = (
        insert(_SAMPLES)
        .from_select(
            [*columns, "readings", "received_at"],
            select(
                *(source.c[name] for name in columns),
                source.c.readings.cast(JSONB),
                bindparam("received_at", now, type_=_UTC_TIME),
            ),
        )
        .on_conflict_do_nothing(constraint="uq_telemetry_samples_vin_at_seq")
        .execution_options(preserve_rowcount=True)
    )
    return session.connection().execute(statement, params).rowcount


def _json(value: dict[str, float] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _upsert_latest(session: Session, newest: list[_Kept], *, now: datetime) -> None:
    """The latest state of each car in the batch, unless the state already holds a newer
    sample (batches can arrive out of order, and replicas write concurrently)."""
    source, params = _unnest(
        {
            "vehicle_id": (BigInteger(), [row.car.id for row in newest]),
            "odometer_km": (Double(), [row.sample.odometer_km for row in newest]),
            "software_version": (String(), [row.sample.software_version for row in newest]),
            "parked": (Boolean(), [row.sample.parked for row in newest]),
            "battery_percent": (Double(), [row.sample.battery_percent for row in newest]),
            "speed_kmh": (Double(), [row.speed_kmh for row in newest]),
            "latitude": (Double(), [row.latitude for row in newest]),
            "longitude": (Double(), [row.longitude for row in newest]),
            "telemetry_at": (_UTC_TIME, [row.sample.at for row in newest]),
            "telemetry_seq": (BigInteger(), [row.sample.seq for row in newest]),
        }
    )
    statement = insert(_STATE).from_select(
        [*params, "last_seen_at", "online"],
        select(
            *(source.c[name] for name in params),
            bindparam("last_seen_at", now, type_=_UTC_TIME),
            # A car that sends telemetry is connected; its status messages say more later.
            bindparam("online", True, type_=Boolean()),
        ),
    )
    new = statement.excluded
    state = _STATE.c
    is_newer = or_(
        state.telemetry_at.is_(None),
        new.telemetry_at > state.telemetry_at,
        and_(new.telemetry_at == state.telemetry_at, new.telemetry_seq > state.telemetry_seq),
    )
    latest: dict[str, ColumnElement[Any]] = {
        name: case((is_newer, new[name]), else_=state[name])
        for name in (
            "software_version",
            "parked",
            "battery_percent",
            "speed_kmh",
            "latitude",
            "longitude",
            "telemetry_at",
            "telemetry_seq",
        )
    }
    latest["odometer_km"] = func.greatest(state.odometer_km, new.odometer_km)
    latest["last_seen_at"] = func.greatest(state.last_seen_at, new.last_seen_at)
    session.connection().execute(
        statement.on_conflict_do_update(index_elements=["vehicle_id"], set_=latest), params
    )


def _software_reported(session: Session, car: _Car, version: str, *, now: datetime) -> None:
    """The car runs another software version than its record says: the record follows it."""
    if version == car.software_version:
        return
    session.execute(update(Vehicle).where(Vehicle.id == car.id).values(software_version=version))
    record(
        session,
        at=now,
        actor=Actor(kind="vehicle", label=car.vin),
        subject_type="vehicle",
        subject_id=car.id,
        event="car.software_reported",
        from_state=car.software_version,
        to_state=version,
        details={"vin": car.vin, "software_version": version},
    )


# --- usage of metered features --------------------------------------------------------------


def store_usage_events(session: Session, items: Sequence[UsageEvent], *, now: datetime) -> int:
    """Store a batch of usage events of metered features; returns how many were new.

    Two statements whatever the batch's size: the cars, then the events (a (VIN, seq) already
    stored is dropped). Events of unknown cars are dropped.
    """
    if not items:
        return 0
    cars = _cars(session, (item.vin for item in items))
    known = [item for item in items if item.vin in cars]
    _count("events", "unknown_vehicle", len(items) - len(known))
    if not known:
        return 0
    source, params = _unnest(
        {
            "vin": (String(), [item.vin for item in known]),
            "seq": (BigInteger(), [item.seq for item in known]),
            "at": (_UTC_TIME, [item.at for item in known]),
            "feature": (String(), [item.feature for item in known]),
            "unit": (String(), [item.unit for item in known]),
            "quantity": (Double(), [item.quantity for item in known]),
        }
    )
    statement = (
        insert(_USAGE)
        .from_select(
            [*params, "received_at"],
            select(
                *(source.c[name] for name in params),
                bindparam("received_at", now, type_=_UTC_TIME),
            ),
        )
        .on_conflict_do_nothing(index_elements=["vin", "seq"])
        .execution_options(preserve_rowcount=True)
    )
    stored = session.connection().execute(statement, params).rowcount
    _count("events", "stored", stored)
    _count("events", "duplicate", len(known) - stored)
    return stored


# --- online status --------------------------------------------------------------------------


def store_status(session: Session, status: Status, *, now: datetime) -> bool:
    """The car came online or went offline (its last will). Returns whether it was news.

    Statuses are ordered by `caas.protocol.mqtt.status_order`: by the car's connection
    (`session`), and within one connection `offline` after `online`, because the last will is
    written when the car connects and so carries the older time. A status older than the one
    held (the retained message read again, the will of an earlier connection delivered after
    the car came back) is ignored.
    """
    car = _cars(session, [status.vin]).get(status.vin)
    if car is None:
        _count("status", "unknown_vehicle", 1)
        return False
    if car.status_at is not None and not status_order(
        status.session,
        status.online,
        status.at,
        than=(car.status_session, bool(car.online), car.status_at),
    ):
        _count("status", "stale", 1)
        return False
    statement = insert(_STATE).values(
        vehicle_id=car.id,
        online=status.online,
        status_at=status.at,
        status_session=status.session,
        last_seen_at=now,
        software_version=status.software_version,
    )
    state = _STATE.c
    new = statement.excluded
    # The same order in SQL, against the row as it is now (another replica may have written).
    is_newer = or_(
        state.status_at.is_(None),
        and_(
            new.status_session.is_not(None),
            state.status_session.is_not(None),
            tuple_(new.status_session, not_(new.online), new.status_at)
            > tuple_(state.status_session, not_(state.online), state.status_at),
        ),
        and_(
            or_(new.status_session.is_(None), state.status_session.is_(None)),
            new.status_at > state.status_at,
        ),
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["vehicle_id"],
            set_={
                "online": case((is_newer, new.online), else_=state.online),
                "status_at": case((is_newer, new.status_at), else_=state.status_at),
                "status_session": case((is_newer, new.status_session), else_=state.status_session),
                "software_version": case(
                    (and_(is_newer, new.software_version.is_not(None)), new.software_version),
                    else_=state.software_version,
                ),
                "last_seen_at": func.greatest(state.last_seen_at, new.last_seen_at),
            },
        )
    )
    _count("status", "stored", 1)
    if status.software_version is not None:
        _software_reported(session, car, status.software_version, now=now)
    return True


# --- reading --------------------------------------------------------------------------------


def latest_state(session: Session, vehicle_id: int) -> VehicleState | None:
    """The car's latest reported state; None while it never reported anything."""
    return session.get(VehicleState, vehicle_id)


def latest_odometer(session: Session, vehicle_id: int) -> float | None:
    """The highest odometer reading the car reported, in km; None while it reported none.

    For maintenance (distance-based services) and eligibility."""
    return session.scalar(
        select(VehicleState.odometer_km).where(VehicleState.vehicle_id == vehicle_id)
    )
