"""Workshops' calendars: slots inside opening hours on the workshop's clock, bays in
parallel, and two customers racing for the last slot in real parallel transactions."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.upkeep import calendar, consent, orders
from caas.upkeep.calendar import SlotTaken
from caas.upkeep.models import OpeningHours, ServiceOrder, Workshop
from tests.files.customers import car_for, sold_customer
from tests.vehicles.support import CommittedDatabase, committed

__all__ = ["committed"]

# Thursday 15 January 2026, 10:00 in Lisbon (UTC+0) and 11:00 in Madrid (UTC+1).
NOW = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


def national_id() -> str:
    """A valid Spanish DNI no other test uses."""
    number = secrets.randbelow(90_000_000) + 10_000_000
    return f"{number}{'TRWAGMYFPDXBNJZSQVHLCKE'[number % 23]}"


def small_workshop(session: Session, *, bays: int, zone: str = "Europe/Madrid") -> Workshop:
    """A workshop open only on Fridays 09:00-10:00 (local): two 30-minute cells per bay."""
    workshop = Workshop(
        code=f"T{secrets.token_hex(4)}",
        name="Taller de prueba",
        country="ES",
        city="Madrid",
        address="Calle de prueba 1",
        postal_code="28999",
        latitude_e6=40_400_000,
        longitude_e6=-3_700_000,
        timezone=zone,
        bays=bays,
        grid_minutes=30,
        slot_minutes={"washer_fluid": 30},
        email="prueba@caas.example",
        created_at=NOW,
    )
    session.add(workshop)
    session.flush()
    session.add(OpeningHours(workshop_id=workshop.id, weekday=4, opens=time(9), closes=time(10)))
    session.flush()
    return workshop


def test_slots_follow_the_workshops_hours_on_its_own_clock_and_its_bays(db: Session) -> None:
    madrid = small_workshop(db, bays=2)
    lisbon = small_workshop(db, bays=1, zone="Europe/Lisbon")
    friday_9_madrid = datetime(2026, 1, 16, 8, 0, tzinfo=UTC)
    slots = calendar.free_slots(db, madrid, "washer_fluid", after=NOW, count=3)
    assert [(s.start, s.bay) for s in slots] == [
        (friday_9_madrid, 1),
        (friday_9_madrid + timedelta(minutes=30), 1),
        (friday_9_madrid + timedelta(days=7), 1),
    ]
    (first,) = calendar.free_slots(db, lisbon, "washer_fluid", after=NOW, count=1)
    assert first.start == datetime(2026, 1, 16, 9, 0, tzinfo=UTC)
    # 60 minutes fit once a Friday; a 120-minute service never fits a one-hour day.
    assert calendar.minutes_for(madrid, "battery_12v") == 60
    assert calendar.free_slots(db, madrid, "service", after=NOW) == []


def test_two_customers_racing_for_the_last_slot_one_gets_it_the_other_is_offered_the_next(
    committed: CommittedDatabase, settings: Settings
) -> None:
    def prepare(session: Session) -> tuple[int, list[tuple[int, int]], datetime]:
        workshop = small_workshop(session, bays=1)
        made: list[tuple[int, int]] = []
        for _ in range(2):
            owner = sold_customer(
                session,
                settings=settings,
                now=NOW - timedelta(days=400),
                national_id=national_id(),
                email=f"racer-{secrets.token_hex(4)}@example.com",
            )
            car = car_for(
                session,
                owner.sale,
                vin=secrets.token_hex(9)[:17].upper(),
                built_at=NOW - timedelta(days=380),
                delivered_at=NOW - timedelta(days=370),
            )
            consent.set_preferences(
                session,
                customer=owner.customer,
                auto_order=False,
                auto_limit_minor=0,
                preferred_workshop_id=workshop.id,
                actor=Actor(kind="customer", label=owner.email, user_id=owner.user.id),
                now=NOW,
            )
            order = orders.propose(
                session,
                vehicle_id=car.id,
                need="washer_fluid",
                detail={},
                actor=Actor.system(),
                now=NOW,
            )
            assert order is not None and order.workshop_id == workshop.id
            made.append((owner.user.id, order.id))
        return (
            workshop.id,
            made,
            calendar.free_slots(session, workshop, "washer_fluid", after=NOW)[0].start,
        )

    workshop_id, made, last = committed.run(prepare)
    start = threading.Barrier(2)
    outcomes: dict[int, object] = {}

    def confirm(user_id: int, order_id: int) -> None:
        session = committed.sessions()
        try:
            user = session.get_one(User, user_id)
            order = orders.order_for_customer(session, user, order_id)
            start.wait()
            actor = Actor(kind="customer", label=user.email, user_id=user.id)
            orders.confirm(session, order, slot_start=last, actor=actor, now=NOW)
            session.commit()
            outcomes[order_id] = "booked"
        except SlotTaken as taken:
            session.rollback()
            outcomes[order_id] = taken
        finally:
            session.close()

    threads = [threading.Thread(target=confirm, args=pair) for pair in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(type(o).__name__ for o in outcomes.values()) == ["SlotTaken", "str"]
    (loser,) = [order_id for order_id, o in outcomes.items() if isinstance(o, SlotTaken)]
    (winner,) = [order_id for order_id, o in outcomes.items() if o == "booked"]
    taken = outcomes[loser]
    assert isinstance(taken, SlotTaken)
    offered = [datetime.fromisoformat(str(s["start"])) for s in taken.extra["next_slots"]]
    assert offered[0] == last + timedelta(minutes=30)

    def states(session: Session) -> dict[int, tuple[str, datetime | None]]:
        rows = session.scalars(select(ServiceOrder).where(ServiceOrder.workshop_id == workshop_id))
        return {o.id: (o.state, o.slot_start) for o in rows}

    after = committed.run(states)
    # Confirmed; the parts wait for the workshop's stock (this one keeps none).
    assert after[winner] == ("confirmed", last)
    assert after[loser] == ("proposed", None)

    # The loser takes the slot they were offered.
    def take_next(session: Session) -> str:
        order = session.get_one(ServiceOrder, loser)
        orders.confirm(session, order, slot_start=offered[0], actor=Actor.system(), now=NOW)
        return order.state

    assert committed.run(take_next) == "confirmed"


def test_a_preferred_workshop_without_room_sends_the_proposal_to_the_nearest_with_room(
    db: Session, settings: Settings
) -> None:
    owner = sold_customer(db, settings=settings, now=NOW - timedelta(days=400))
    car = car_for(
        db,
        owner.sale,
        vin="UPK0CALENDAR00001",
        built_at=NOW - timedelta(days=380),
        delivered_at=NOW - timedelta(days=370),
    )
    full = small_workshop(db, bays=1)  # open one hour a week: a service never fits
    actor = Actor(kind="customer", label=owner.email, user_id=owner.user.id)
    consent.set_preferences(
        db,
        customer=owner.customer,
        auto_order=False,
        auto_limit_minor=0,
        preferred_workshop_id=full.id,
        actor=actor,
        now=NOW,
    )
    service = orders.propose(
        db, vehicle_id=car.id, need="service", detail={}, actor=Actor.system(), now=NOW
    )
    washer = orders.propose(
        db, vehicle_id=car.id, need="washer_fluid", detail={}, actor=Actor.system(), now=NOW
    )
    assert service is not None and washer is not None
    assert db.get_one(Workshop, service.workshop_id).name == "Taller Norte"
    assert washer.workshop_id == full.id  # 30 minutes fit there: the preferred one keeps it
