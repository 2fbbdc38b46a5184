"""The sweep of window boundaries: every start or end of an entitlement's window gets a newly
signed configuration for its car.

The car enforces its windows offline by its own clock (the manifest carries them), but the
platform re-signs at every boundary, so what the car runs and what the platform says it runs
never drift apart, and ended entitlements are moved to `ended`.

How it runs, and why it neither loses nor repeats a boundary:

- One `SweepCursor` row ("entitlement_windows") says how far the sweep has gone
  (`swept_until`). A pass takes every entitlement whose `valid_from` or `valid_until` falls in
  (swept_until, now], groups them per car and, per car, moves the ended ones to `ended` and
  calls `request_configuration` once. A pass is cut into batches of cars (by car id); the pass
  in progress is in the cursor (`pass_until`, `after_vehicle_id`). Each batch runs in one
  transaction with the cursor row locked (FOR UPDATE) and moves the cursor in it: a crash
  rolls the batch back whole (nothing lost), a finished batch is never redone (nothing
  repeated), and a second worker waits on the lock and then finds the work done.
- A car whose newest configuration was signed at or after its boundary is skipped: whoever
  changed the entitlement then (a purchase, a switch, the delivery) has already re-signed it.
- It runs by itself in the worker, as a self-rescheduling outbox topic (`store.sweep`): each
  run does one batch and queues the next run, at once when the pass is not finished, else at
  the next boundary or within `LONGEST_WAIT`, whichever comes first. Runs are numbered
  (`SweepCursor.runs`); the message of run N has the dedupe key `store.sweep:N` and carries N,
  so queuing the next run twice is queued once, and a stray message of an older run finds
  itself stale and does nothing: the chain never forks, whatever the number of workers or
  restarts. A failed run is retried (`RetryLater`) rather than parked, so the chain never
  stops.
- The chain starts with the first entitlement ever granted (`start_sweeping`, called by
  `grant`, a no-op once the cursor exists) and lives in PostgreSQL from then on: a restarted
  worker picks up the queued run. A new cursor starts at `BEGINNING`, so boundaries that
  passed before the first run are swept too (once: the skip rule above).
- A boundary granted less than `LONGEST_WAIT` ahead of the next run is re-signed up to that
  late; the car has already switched by its own clock meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog
from sqlalchemy import Row, func, literal, select, union_all, update
from sqlalchemy.orm import Session

from caas.core.clock import Clock
from caas.core.history import Actor, record
from caas.core.outbox import Handler, RetryLater
from caas.ota.models import ConfigurationVersion
from caas.store import chains
from caas.store.models import Entitlement, SweepCursor
from caas.store.rules import COUNTING_STATES, ENTITLEMENT
from caas.vehicles.models import Vehicle

log = structlog.get_logger(__name__)

SWEEP_TOPIC: Final = "store.sweep"
CURSOR: Final = "entitlement_windows"
BEGINNING: Final = datetime(2000, 1, 1, tzinfo=UTC)
# The longest a boundary waits for its run when it was not known at the previous run.
LONGEST_WAIT: Final = timedelta(seconds=60)
# Cars per batch (one transaction each).
BATCH: Final = 200
ACTOR: Final = Actor.system("window sweep")


@dataclass(frozen=True)
class SweepBatch:
    """What one batch did."""

    cars: int  # cars with a boundary in the batch
    signed: int  # configurations issued (cars not already re-signed since their boundary)
    boundaries: int  # starts and ends of windows crossed
    ended: int  # entitlements moved to `ended`
    finished: bool  # the pass reached its end (`swept_until` moved)
    next_run: datetime


def _cursor(session: Session) -> SweepCursor:
    """The cursor row, created at `BEGINNING` the first time, locked until the commit."""
    return chains.locked_cursor(session, CURSOR, start=BEGINNING)


def _boundaries(
    session: Session, *, since: datetime, until: datetime, after: int, limit: int
) -> Sequence[Row[Any]]:
    """Per car (by id, after `after`, at most `limit` cars): whether windows start and end in
    (since, until], how many boundaries, and the latest one of an enabled entitlement."""
    counting = Entitlement.state.in_(COUNTING_STATES)
    starts = select(
        Entitlement.vehicle_id.label("vehicle_id"),
        Entitlement.valid_from.label("at"),
        literal(True).label("start"),
        Entitlement.enabled.label("enabled"),
    ).where(counting, Entitlement.valid_from > since, Entitlement.valid_from <= until)
    ends = select(
        Entitlement.vehicle_id,
        Entitlement.valid_until,
        literal(False),
        Entitlement.enabled,
    ).where(counting, Entitlement.valid_until > since, Entitlement.valid_until <= until)
    crossed = union_all(starts, ends).subquery()
    return session.execute(
        select(
            crossed.c.vehicle_id,
            func.bool_or(crossed.c.start).label("starts"),
            func.bool_or(~crossed.c.start).label("ends"),
            func.count().label("boundaries"),
            func.max(crossed.c.at).filter(crossed.c.enabled).label("last_enabled"),
        )
        .where(crossed.c.vehicle_id > after)
        .group_by(crossed.c.vehicle_id)
        .order_by(crossed.c.vehicle_id)
        .limit(limit)
    ).all()


def _end_windows(
    session: Session, vehicle_ids: list[int], *, until: datetime, now: datetime
) -> int:
    """Active entitlements of these cars whose window is over by `until` become `ended`."""
    ENTITLEMENT.check("active", "ended")
    ended = session.execute(
        update(Entitlement)
        .where(
            Entitlement.vehicle_id.in_(vehicle_ids),
            Entitlement.state == "active",
            Entitlement.valid_until <= until,
        )
        .values(state="ended", updated_at=now)
        .returning(
            Entitlement.id,
            Entitlement.customer_id,
            Entitlement.vehicle_id,
            Entitlement.code,
            Entitlement.valid_until,
        )
        .execution_options(synchronize_session="fetch")
    ).all()
    for row in ended:
        record(
            session,
            at=now,
            actor=ACTOR,
            subject_type="entitlement",
            subject_id=row.id,
            customer_id=row.customer_id,
            event="entitlement.ended",
            from_state="active",
            to_state="ended",
            details={
                "vehicle_id": row.vehicle_id,
                "code": row.code,
                "valid_until": row.valid_until.isoformat(),
            },
        )
    return len(ended)


def _last_signed(session: Session, vehicle_ids: list[int]) -> dict[int, datetime]:
    rows = session.execute(
        select(ConfigurationVersion.vehicle_id, func.max(ConfigurationVersion.created_at))
        .where(ConfigurationVersion.vehicle_id.in_(vehicle_ids))
        .group_by(ConfigurationVersion.vehicle_id)
    ).all()
    return {row[0]: row[1] for row in rows}


def next_boundary(session: Session, *, after: datetime) -> datetime | None:
    """The first start or end of a counting entitlement's window after `after`."""
    counting = Entitlement.state.in_(COUNTING_STATES)
    first_start = (
        select(func.min(Entitlement.valid_from))
        .where(counting, Entitlement.valid_from > after)
        .scalar_subquery()
    )
    first_end = (
        select(func.min(Entitlement.valid_until))
        .where(counting, Entitlement.valid_until > after)
        .scalar_subquery()
    )
    found: datetime | None = session.scalar(select(func.least(first_start, first_end)))
    return found


def _reason(starts: bool, ends: bool) -> str:
    if starts and ends:
        return "window.boundary"
    return "window.start" if starts else "window.end"


def sweep_batch(
    session: Session, cursor: SweepCursor, *, now: datetime, batch: int = BATCH
) -> SweepBatch:
    """One batch of the pass in progress (or of a new pass up to `now`), the cursor moved.
    The caller holds the cursor's lock (`_cursor`) and commits."""
    from caas.ota.pushes import open_push
    from caas.ota.service import request_configuration

    until = cursor.pass_until or now
    rows = _boundaries(
        session,
        since=cursor.swept_until,
        until=until,
        after=cursor.after_vehicle_id or 0,
        limit=batch,
    )
    vehicle_ids = [row.vehicle_id for row in rows]
    if vehicle_ids:
        # The cars' rows before what they run (`lock_vehicle`), several cars by id: the owner
        # switching an option locks the car, then the entitlement this batch may end.
        session.execute(
            select(Vehicle.id)
            .where(Vehicle.id.in_(vehicle_ids))
            .order_by(Vehicle.id)
            .with_for_update()
        )
    ended = _end_windows(session, vehicle_ids, until=until, now=now) if vehicle_ids else 0
    signed_at = _last_signed(session, vehicle_ids) if vehicle_ids else {}
    to_sign = {
        row.vehicle_id: _reason(row.starts, row.ends)
        for row in rows
        if row.last_enabled is not None
        and (row.vehicle_id not in signed_at or signed_at[row.vehicle_id] < row.last_enabled)
    }
    if to_sign:
        # The pass's batches share one push (keyed by the pass's end), for the operator's page.
        push = open_push(
            session,
            kind="window.sweep",
            label=f"window boundaries up to {until.isoformat(timespec='minutes')}",
            actor=ACTOR,
            now=now,
            key=f"{SWEEP_TOPIC}:{until.isoformat()}",
        )
        vehicles = session.scalars(
            select(Vehicle).where(Vehicle.id.in_(to_sign)).order_by(Vehicle.id)
        )
        for vehicle in vehicles:
            request_configuration(
                session, vehicle, reason=to_sign[vehicle.id], actor=ACTOR, now=now, push=push
            )
    finished = len(rows) < batch
    if finished:
        cursor.swept_until = until
        cursor.pass_until = None
        cursor.after_vehicle_id = None
        upcoming = next_boundary(session, after=until)
        next_run = now + LONGEST_WAIT if upcoming is None else min(upcoming, now + LONGEST_WAIT)
    else:
        cursor.pass_until = until
        cursor.after_vehicle_id = vehicle_ids[-1]
        next_run = now
    return SweepBatch(
        cars=len(rows),
        signed=len(to_sign),
        boundaries=sum(row.boundaries for row in rows),
        ended=ended,
        finished=finished,
        next_run=next_run,
    )


def start_sweeping(session: Session, *, now: datetime) -> None:
    """Queue the sweep's first run unless the chain has started (the cursor exists); cheap
    enough for every grant, and safe to call from anywhere at any time."""
    if not chains.started(session, CURSOR):
        chains.queue_run(session, SWEEP_TOPIC, 0, at=now, now=now)


def run_sweep(session: Session, *, run: int, now: datetime) -> SweepBatch | None:
    """Run number `run` of the chain: one batch, then the next run queued. None when `run` is
    stale (another message of the chain already did it)."""
    cursor = _cursor(session)
    if cursor.runs != run:
        log.info("store.sweep_stale", run=run, current=cursor.runs)
        return None
    done = sweep_batch(session, cursor, now=now)
    cursor.runs = run + 1
    chains.queue_run(session, SWEEP_TOPIC, cursor.runs, at=done.next_run, now=now)
    if done.cars:
        log.info(
            "store.swept",
            cars=done.cars,
            signed=done.signed,
            boundaries=done.boundaries,
            ended=done.ended,
            finished=done.finished,
        )
    return done


def handlers(clock: Clock) -> dict[str, Handler]:
    def sweep(session: Session, payload: dict[str, Any]) -> None:
        try:
            run_sweep(session, run=int(payload["run"]), now=clock.now())
        except Exception as error:
            # The sweep is the clock of every window: retried with backoff, never parked.
            raise RetryLater(f"{type(error).__name__}: {error}") from error

    return {SWEEP_TOPIC: sweep}
