"""Workshops' calendars: free slots on a grid of opening hours, booked bay by bay.

A workshop's day is cut into cells of `grid_minutes` inside its opening periods (wall-clock
times in its own timezone); a need takes whole consecutive cells of one bay. A booking is one
`BayBooking` row per cell, unique per (workshop, cell start, bay): two customers confirming
the same slot at once both try to insert the same rows, the database lets one through, and
the other is offered the next free slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from caas.core.errors import Conflict
from caas.upkeep.models import BayBooking, OpeningHours, ServiceOrder, Workshop
from caas.upkeep.rules import DEFAULT_SLOT_MINUTES, OFFERED_SLOTS, SEARCH_DAYS


@dataclass(frozen=True)
class Slot:
    start: datetime
    end: datetime
    bay: int

    def as_json(self) -> dict[str, object]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "bay": self.bay}


def minutes_for(workshop: Workshop, need: str) -> int:
    """How long the need takes at the workshop, rounded up to whole cells of its grid."""
    minutes = int(workshop.slot_minutes.get(need, DEFAULT_SLOT_MINUTES[need]))
    grid = workshop.grid_minutes
    return -(-minutes // grid) * grid


def _cells(workshop: Workshop, start: datetime, minutes: int) -> list[datetime]:
    step = timedelta(minutes=workshop.grid_minutes)
    return [start + step * i for i in range(minutes // workshop.grid_minutes)]


def _starts_on(
    workshop: Workshop, periods: list[OpeningHours], day: date, minutes: int
) -> list[datetime]:
    """Every start on the grid of `day` (local) where the need fits before closing, in UTC."""
    zone = ZoneInfo(workshop.timezone)
    starts: list[datetime] = []
    for period in periods:
        if period.weekday != day.weekday():
            continue
        moment = datetime.combine(day, period.opens, tzinfo=zone)
        closes = datetime.combine(day, period.closes, tzinfo=zone)
        while moment + timedelta(minutes=minutes) <= closes:
            starts.append(moment.astimezone(UTC))
            moment += timedelta(minutes=workshop.grid_minutes)
    return sorted(starts)


def _periods(session: Session, workshop_id: int) -> list[OpeningHours]:
    return list(
        session.scalars(
            select(OpeningHours)
            .where(OpeningHours.workshop_id == workshop_id)
            .order_by(OpeningHours.weekday, OpeningHours.opens)
        )
    )


def _taken(
    session: Session, workshop_id: int, since: datetime, until: datetime
) -> set[tuple[datetime, int]]:
    rows = session.execute(
        select(BayBooking.starts_at, BayBooking.bay).where(
            BayBooking.workshop_id == workshop_id,
            BayBooking.starts_at >= since,
            BayBooking.starts_at < until,
        )
    ).all()
    return {(starts_at.astimezone(UTC), bay) for starts_at, bay in rows}


def free_slots(
    session: Session,
    workshop: Workshop,
    need: str,
    *,
    after: datetime,
    count: int = OFFERED_SLOTS,
) -> list[Slot]:
    """The first `count` starts after `after` where some bay is free for the whole need,
    each with the lowest such bay; searched `SEARCH_DAYS` ahead."""
    minutes = minutes_for(workshop, need)
    periods = _periods(session, workshop.id)
    if not periods:
        return []
    zone = ZoneInfo(workshop.timezone)
    first_day = after.astimezone(zone).date()
    until = after + timedelta(days=SEARCH_DAYS + 1)
    taken = _taken(session, workshop.id, after - timedelta(days=1), until)
    slots: list[Slot] = []
    for offset in range(SEARCH_DAYS):
        for start in _starts_on(workshop, periods, first_day + timedelta(days=offset), minutes):
            if start < after:
                continue
            cells = _cells(workshop, start, minutes)
            for bay in range(1, workshop.bays + 1):
                if all((cell, bay) not in taken for cell in cells):
                    slots.append(Slot(start, start + timedelta(minutes=minutes), bay))
                    break
            if len(slots) == count:
                return slots
    return slots


def is_opening_start(session: Session, workshop: Workshop, need: str, start: datetime) -> bool:
    """Whether the need may start at `start` there: on the grid and inside opening hours."""
    minutes = minutes_for(workshop, need)
    day = start.astimezone(ZoneInfo(workshop.timezone)).date()
    return start.astimezone(UTC) in _starts_on(
        workshop, _periods(session, workshop.id), day, minutes
    )


class SlotTaken(Conflict):
    code = "upkeep.slot_taken"


def book(
    session: Session, order: ServiceOrder, workshop: Workshop, start: datetime, *, now: datetime
) -> Slot:
    """Take the first bay free for the whole need from `start`, in the caller's transaction.

    A bay another transaction is booking at the same time is found taken when it commits
    (the unique key); then the next bay is tried. When none is left, `SlotTaken` carries the
    next free slots to offer instead.
    """
    minutes = minutes_for(workshop, need=order.need)
    cells = _cells(workshop, start, minutes)
    for bay in range(1, workshop.bays + 1):
        try:
            with session.begin_nested():
                for cell in cells:
                    session.add(
                        BayBooking(
                            workshop_id=workshop.id, starts_at=cell, bay=bay, order_id=order.id
                        )
                    )
                session.flush()
        except IntegrityError:
            continue
        return Slot(start, start + timedelta(minutes=minutes), bay)
    offered = free_slots(session, workshop, order.need, after=max(now, start))
    raise SlotTaken(
        "this slot was just taken: choose another",
        field="slot_start",
        next_slots=[slot.as_json() for slot in offered],
    )


def release(session: Session, order: ServiceOrder) -> None:
    """Free the cells an order took."""
    session.execute(delete(BayBooking).where(BayBooking.order_id == order.id))


def bookings_of(
    session: Session, workshop_id: int, since: datetime, until: datetime
) -> list[ServiceOrder]:
    """The workshop's booked orders starting in [since, until), in time order."""
    return list(
        session.scalars(
            select(ServiceOrder)
            .where(
                ServiceOrder.workshop_id == workshop_id,
                ServiceOrder.slot_start >= since,
                ServiceOrder.slot_start < until,
                ServiceOrder.state.in_(("confirmed", "parts_reserved", "done")),
            )
            .order_by(ServiceOrder.slot_start, ServiceOrder.bay)
        )
    )
