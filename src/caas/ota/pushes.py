"""Configuration pushes: one change for many cars at once, and how far it has gone.

Where the platform changes many cars' configuration in one go (a release's wave offered, a
rollout resumed after a halt or cancelled, a pass of the window sweep, the operator's fleet-wide
re-sign, `resign_fleet`), the caller opens a push (`open_push`) and passes it to every
`request_configuration` of the change; each version it issues carries the push's id. The
operator's page (`caas.web.pushes`) then counts, per push, the cars targeted and what became of
each car's version: published to the broker, applied, waiting for the car to be parked,
rejected, replaced by a newer version before the car answered, or still pending while the car is
offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, case, exists, func, select
from sqlalchemy.orm import Session

from caas.catalog.models import Platform
from caas.core.history import Actor, record
from caas.core.outbox import enqueue
from caas.ota.models import ConfigurationPush, ConfigurationVersion
from caas.vehicles.models import Vehicle, VehicleState

SUBJECT: Final = "configuration_push"
# The operator's fleet-wide re-sign, done by the worker a batch of cars at a time.
RESIGN_TOPIC: Final = "ota.resign"
RESIGN_BATCH: Final = 200

# The per-car outcomes the page counts and filters by; `offline` and `waiting` split the
# pending versions by whether the car is connected now.
OUTCOMES: Final = ("applied", "deferred", "rejected", "superseded", "waiting", "offline")


def open_push(
    session: Session,
    *,
    kind: str,
    label: str,
    actor: Actor,
    now: datetime,
    key: str | None = None,
) -> ConfigurationPush:
    """A new push, or the one already opened under `key` (a change requested in several
    transactions, such as a sweep pass in batches). Its opening is kept in the history."""
    if key is not None:
        found = session.scalar(select(ConfigurationPush).where(ConfigurationPush.key == key))
        if found is not None:
            return found
    push = ConfigurationPush(
        kind=kind[:40], label=label[:200], key=key, requested_by=str(actor)[:200], created_at=now
    )
    session.add(push)
    session.flush()
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=push.id,
        event="configuration_push.opened",
        details={"kind": push.kind, "label": push.label},
    )
    return push


def resign_fleet(session: Session, *, actor: Actor, now: datetime) -> ConfigurationPush:
    """Sign every delivered car's configuration anew, as one push: what the operator does after
    the signing key was rotated, so that no car is left with a manifest of the old key. The
    worker signs the cars a batch at a time (`resign_batch`, topic `ota.resign`)."""
    push = open_push(
        session, kind="fleet.resign", label="every delivered car in service", actor=actor, now=now
    )
    _queue_resign(session, push, actor=actor, after=0, now=now)
    return push


def _queue_resign(
    session: Session, push: ConfigurationPush, *, actor: Actor, after: int, now: datetime
) -> None:
    enqueue(
        session,
        topic=RESIGN_TOPIC,
        payload={
            "push_id": push.id,
            "after": after,
            "actor": {"kind": actor.kind, "label": actor.label, "user_id": actor.user_id},
        },
        dedupe_key=f"{RESIGN_TOPIC}:{push.id}:{after}",
        now=now,
    )


def resign_batch(
    session: Session, payload: dict[str, Any], *, now: datetime, batch: int = RESIGN_BATCH
) -> int:
    """One batch of a fleet re-sign: the next `batch` delivered cars in service (by id, after
    the payload's `after`) each get a newly signed version of the push, and the next batch is
    queued while cars remain. A car that already has a version of this push (a batch delivered
    twice) is skipped, and so is a car whose manifest would not fit in one MQTT packet (kept
    in the push's history): one such car must not hold back the rest of the fleet, and
    `request_configuration` refuses it before writing anything. Returns how many cars were
    signed."""
    from caas.ota.service import ConfigurationTooLarge, request_configuration

    push = session.get(ConfigurationPush, int(payload["push_id"]))
    if push is None:
        return 0
    actor = Actor(**payload["actor"])
    already = exists().where(
        ConfigurationVersion.push_id == push.id, ConfigurationVersion.vehicle_id == Vehicle.id
    )
    vehicles = list(
        session.scalars(
            select(Vehicle)
            .where(
                Vehicle.id > int(payload["after"]),
                Vehicle.delivered_at.is_not(None),
                Vehicle.state != "archived",
                ~already,
            )
            .order_by(Vehicle.id)
            .limit(batch)
        )
    )
    signed = 0
    for vehicle in vehicles:
        try:
            request_configuration(
                session, vehicle, reason="fleet re-sign", actor=actor, now=now, push=push
            )
        except ConfigurationTooLarge as refused:
            _car_left_out(session, push, vehicle, refused, actor=actor, now=now)
        else:
            signed += 1
    if len(vehicles) == batch:
        _queue_resign(session, push, actor=actor, after=vehicles[-1].id, now=now)
    return signed


def _car_left_out(
    session: Session,
    push: ConfigurationPush,
    vehicle: Vehicle,
    refused: Exception,
    *,
    actor: Actor,
    now: datetime,
) -> None:
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=push.id,
        event="configuration_push.car_left_out",
        details={"vin": vehicle.vin, "reason": str(refused)},
    )


@dataclass(frozen=True)
class PushProgress:
    """One push with its counts (each car once: its version of this push)."""

    id: int
    kind: str
    label: str
    requested_by: str
    created_at: datetime
    targeted: int
    published: int
    applied: int
    deferred: int
    rejected: int
    superseded: int
    waiting: int
    offline: int

    @property
    def open(self) -> int:
        """Cars the push has not settled yet (the car has not answered)."""
        return self.waiting + self.offline

    @property
    def done(self) -> bool:
        return self.targeted > 0 and self.open == 0


def _counts() -> Select[int | None, int, int, int, int, int, int, int, int]:
    """Per push: cars, published, applied, deferred, rejected, superseded, waiting, offline."""
    version = ConfigurationVersion
    online = func.coalesce(VehicleState.online, False)

    def count_when(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.count(case((condition, 1)))

    pending = version.state == "pending"
    return (
        select(
            version.push_id,
            func.count(),
            func.count(version.published_at),
            count_when(version.state == "applied"),
            count_when(version.state == "deferred"),
            count_when(version.state == "rejected"),
            count_when(version.state == "superseded"),
            count_when(pending & online),
            count_when(pending & ~online),
        )
        .outerjoin(VehicleState, VehicleState.vehicle_id == version.vehicle_id)
        .group_by(version.push_id)
    )


def recent_pushes(session: Session, *, limit: int = 20) -> list[PushProgress]:
    """The newest pushes first, each with its counts."""
    pushes = list(
        session.scalars(
            select(ConfigurationPush)
            .order_by(ConfigurationPush.created_at.desc(), ConfigurationPush.id.desc())
            .limit(limit)
        )
    )
    return _with_counts(session, pushes)


def push_progress(session: Session, push_id: int) -> PushProgress | None:
    """One push with its counts; None when there is no such push."""
    push = session.get(ConfigurationPush, push_id)
    return _with_counts(session, [push])[0] if push is not None else None


def _with_counts(session: Session, pushes: list[ConfigurationPush]) -> list[PushProgress]:
    if not pushes:
        return []
    rows = session.execute(
        _counts().where(ConfigurationVersion.push_id.in_([push.id for push in pushes]))
    )
    counts = {row[0]: tuple(row[1:]) for row in rows}
    return [
        PushProgress(
            push.id,
            push.kind,
            push.label,
            push.requested_by,
            push.created_at,
            *counts.get(push.id, (0,) * 8),
        )
        for push in pushes
    ]


@dataclass(frozen=True)
class PushCar:
    """One car of a push: its version of the push and what became of it."""

    vin: str
    model: str
    version: int
    outcome: str
    online: bool
    published_at: datetime | None
    publish_count: int
    reported_at: datetime | None
    report_reason: str | None


def push_cars(
    session: Session,
    push_id: int,
    *,
    outcome: str | None = None,
    vin: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[PushCar], int]:
    """The push's cars by VIN (filtered by outcome and by a part of the VIN), one page of
    them, and how many match."""
    version = ConfigurationVersion
    online = func.coalesce(VehicleState.online, False)
    outcome_of = case(
        (version.state == "pending", case((online, "waiting"), else_="offline")),
        else_=version.state,
    )
    query = (
        select(
            Vehicle.vin,
            Platform.code,
            version.version,
            outcome_of.label("outcome"),
            online.label("online"),
            version.published_at,
            version.publish_count,
            version.reported_at,
            version.report_reason,
        )
        .join(Vehicle, Vehicle.id == version.vehicle_id)
        .join(Platform, Platform.id == Vehicle.platform_id)
        .outerjoin(VehicleState, VehicleState.vehicle_id == version.vehicle_id)
        .where(version.push_id == push_id)
    )
    if outcome:
        query = query.where(outcome_of == outcome)
    if vin:
        query = query.where(Vehicle.vin.ilike(f"%{_escaped(vin)}%", escape="\\"))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(Vehicle.vin).limit(limit).offset(offset))
    return [PushCar(*row) for row in rows], total


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
