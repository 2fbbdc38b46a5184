"""Detection: a reading crossing its model's mark makes exactly one order, also when it wavers,
when it is read again after a restart, and again only after the mark re-armed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from caas.core import outbox
from caas.core.clock import FixedClock
from caas.core.history import subject_history
from caas.core.settings import Settings
from caas.upkeep import readings
from caas.upkeep.models import Part, PartPrice, ServiceOrder
from caas.upkeep.readings_models import UpkeepLevel, UpkeepThreshold
from caas.upkeep.thresholds import MARKS
from caas.vehicles import ingest
from caas.vehicles.models import Vehicle
from tests.vehicles.cars import Fleet, owned_fleet, telemetry
from tests.vehicles.test_ingest import statements

WASHER = MARKS["washer_fluid"].signal
PADS = MARKS["brake_pads"].signal


@pytest.fixture
def fleet(db: Session, settings: Settings, clock: FixedClock) -> Fleet:
    priced(db, "washer_fluid")
    priced(db, "brake_pads")
    return owned_fleet(db, settings=settings, now=clock.now())


def priced(db: Session, need: str) -> None:
    """A part for `need` priced in Spain, so a proposal can be quoted."""
    db.execute(
        insert(Part)
        .values(code=f"test-{need}", kind="part", need=need, name=f"Test {need}", quantity=1)
        .on_conflict_do_nothing()
    )
    part_id = db.scalar(select(Part.id).where(Part.code == f"test-{need}"))
    db.execute(
        insert(PartPrice)
        .values(part_id=part_id, country="ES", net_minor=900, currency="EUR")
        .on_conflict_do_nothing()
    )
    db.flush()


def read(
    db: Session,
    fleet: Fleet,
    levels: list[float],
    start: datetime,
    *,
    signal: str = WASHER,
    memory: readings.LevelMemory | None = None,
) -> None:
    """The car sends `levels` of `signal`, a minute apart, each in its own telemetry batch."""
    for index, level in enumerate(levels):
        at = start + timedelta(minutes=index)
        seq = int(at.timestamp())
        ingest.store_telemetry(
            db,
            [telemetry(fleet.order.vin, seq, at, extra={signal: level})],
            now=at,
            upkeep_memory=memory,
        )


def run_proposals(db: Session, now: datetime) -> None:
    """What the worker does with the queued proposals (the handler the relay calls)."""
    for message in outbox.pending(db, readings.PROPOSE_TOPIC):
        readings.propose_job(db, message.payload, now=now)
        message.done_at = now
    db.flush()


def orders(db: Session, fleet: Fleet, need: str = "washer_fluid") -> list[ServiceOrder]:
    query = select(ServiceOrder).where(
        ServiceOrder.vehicle_id == fleet.order.vehicle_id, ServiceOrder.need == need
    )
    return list(db.scalars(query.order_by(ServiceOrder.id)))


def proposals(db: Session) -> list[dict[str, Any]]:
    return [m.payload for m in outbox.pending(db, readings.PROPOSE_TOPIC)]


def level(db: Session, fleet: Fleet, mark: str = "washer_fluid") -> UpkeepLevel:
    db.expire_all()
    return db.get_one(UpkeepLevel, (fleet.order.vehicle_id, mark))


def test_a_level_wavering_around_its_mark_makes_one_order(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    now = clock.now()
    read(db, fleet, [60, 40, 16, 14.9, 15.5, 14.2, 16.8, 30, 12, 39.9], now)
    assert [(p["need"], p["detail"]["level"]) for p in proposals(db)] == [("washer_fluid", 14.9)]
    run_proposals(db, now)
    run_proposals(db, now)
    [order] = orders(db, fleet)
    assert order.state == "proposed"
    assert order.detail["mark"] == "washer_fluid"
    state = level(db, fleet)
    assert (state.tripped, state.trips) == (True, 1)
    events = [e.event for e in subject_history(db, "vehicle", fleet.order.vehicle_id)]
    assert events.count("upkeep.mark_tripped") == 1


def test_a_restarted_ingest_reading_the_same_car_makes_no_second_order(
    db: Session, sessions: Any, clock: FixedClock, fleet: Fleet
) -> None:
    now = clock.now()
    read(db, fleet, [20, 10], now)
    db.commit()
    run_proposals(db, now)
    db.commit()
    # A new worker: nothing in memory, the state is read back from the database.
    with sessions() as again:
        read(again, fleet, [9, 8, 12, 7], now + timedelta(hours=1))
        # The same batch delivered again (a replica, a retried batch): dropped as old.
        read(again, fleet, [20, 10], now)
        assert proposals(again) == []
        run_proposals(again, now)
        assert len(orders(again, fleet)) == 1
        # Even a proposal job replayed (the same crossing) makes no second open order.
        payload = {
            "vehicle_id": fleet.order.vehicle_id,
            "vin": fleet.order.vin,
            "need": "washer_fluid",
            "detail": {"mark": "washer_fluid", "crossing": 1},
        }
        readings.propose_job(again, payload, now=now)
        assert len(orders(again, fleet)) == 1


def test_after_the_order_is_done_and_the_fluid_filled_a_new_crossing_makes_a_new_order(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    now = clock.now()
    read(db, fleet, [20, 10], now)
    run_proposals(db, now)
    [first] = orders(db, fleet)
    # Still tripped while the order is open: a lower level asks for nothing more.
    read(db, fleet, [5], now + timedelta(hours=1))
    assert proposals(db) == []
    first.state = "done"  # the workshop's part of the order's life (caas.upkeep.orders)
    db.flush()
    read(db, fleet, [100], now + timedelta(days=1))
    assert level(db, fleet).tripped is False
    read(db, fleet, [50, 14], now + timedelta(days=30))
    assert [p["detail"]["crossing"] for p in proposals(db)] == [2]
    run_proposals(db, now + timedelta(days=30))
    assert [o.state for o in orders(db, fleet)] == ["done", "proposed"]


def test_a_mark_that_trips_above_its_level_rearms_below_it(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    now = clock.now()
    read(db, fleet, [50, 79, 81, 79, 82, 29, 85], now, signal=PADS)
    assert [p["detail"]["level"] for p in proposals(db)] == [81, 85]
    run_proposals(db, now)
    assert len(orders(db, fleet, "brake_pads")) == 1  # the first is still open


def test_readings_reach_detection_without_the_optional_consents(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    """Driving style is not consented: the sample keeps no readings, upkeep still sees them."""
    now = clock.now()
    read(db, fleet, [10], now)
    assert len(proposals(db)) == 1


def test_a_steady_level_is_written_only_now_and_then(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    now = clock.now()
    read(db, fleet, [80], now)
    first = level(db, fleet)
    assert (first.level, first.observed_at) == (80, now)
    read(db, fleet, [79.9, 79.8], now + timedelta(minutes=1))
    assert level(db, fleet).level == 80  # not worth a write yet
    read(db, fleet, [79], now + readings.LEVEL_REFRESH + timedelta(minutes=1))
    assert level(db, fleet).level == 79


def test_a_model_without_marks_is_not_watched(db: Session, clock: FixedClock, fleet: Fleet) -> None:
    vehicle = db.get_one(Vehicle, fleet.order.vehicle_id)
    db.execute(
        UpkeepLevel.__table__.delete().where(UpkeepLevel.vehicle_id == vehicle.id)  # type: ignore[attr-defined]
    )
    db.execute(
        UpkeepThreshold.__table__.delete().where(  # type: ignore[attr-defined]
            UpkeepThreshold.platform_id == vehicle.platform_id
        )
    )
    read(db, fleet, [5], clock.now())
    assert proposals(db) == []
    assert db.scalars(select(UpkeepLevel).where(UpkeepLevel.vehicle_id == vehicle.id)).all() == []


def test_the_ingest_memory_changes_no_decision(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    memory = readings.LevelMemory()
    now = clock.now()
    read(db, fleet, [60, 40, 16, 14.9, 15.5, 14.2, 16.8, 30, 12, 39.9], now, memory=memory)
    assert [p["detail"]["level"] for p in proposals(db)] == [14.9]
    read(db, fleet, [41, 50, 14], now + timedelta(hours=1), memory=memory)
    assert [p["detail"]["crossing"] for p in proposals(db)] == [1, 2]
    # Another process re-armed the mark meanwhile: this one's memory still says tripped, the
    # database decides (the refresh sends the car again at the latest).
    db.execute(
        UpkeepLevel.__table__.update()  # type: ignore[attr-defined]
        .where(UpkeepLevel.vehicle_id == fleet.order.vehicle_id)
        .values(tripped=False)
    )
    read(db, fleet, [10], now + timedelta(hours=2), memory=memory)
    assert [p["detail"]["crossing"] for p in proposals(db)] == [1, 2, 3]


def test_with_the_ingest_memory_a_batch_of_healthy_cars_sends_no_upkeep_statement(
    db: Session, clock: FixedClock, fleet: Fleet, connection: Connection
) -> None:
    memory = readings.LevelMemory()
    now = clock.now()
    full = {WASHER: 90.0, PADS: 10.0}
    with statements(connection) as first:
        ingest.store_telemetry(
            db, [telemetry(fleet.order.vin, 1, now, extra=full)], now=now, upkeep_memory=memory
        )
    later = now + timedelta(minutes=1)
    with statements(connection) as steady:
        ingest.store_telemetry(
            db, [telemetry(fleet.order.vin, 2, later, extra=full)], now=later, upkeep_memory=memory
        )
    assert any("upkeep_levels" in sql for sql in first)
    assert not any("upkeep" in sql for sql in steady), steady
    assert len(steady) == 4  # the cars, the consents, the samples, the latest states
