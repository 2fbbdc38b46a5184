"""Storing what the cars send: in batches, once per message, only what the owner allows, and
the twin's latest state kept up to date."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import subject_history
from caas.core.settings import Settings
from caas.protocol.vin import make_vin, model_year_code
from caas.vehicles import ingest
from caas.vehicles.models import FeatureUsage, TelemetrySample, Vehicle, VehicleState
from tests.vehicles.cars import Fleet, consent, minutes, owned_fleet, status, telemetry, usage


@pytest.fixture
def fleet(db: Session, settings: Settings, clock: FixedClock) -> Fleet:
    return owned_fleet(db, settings=settings, now=clock.now())


def samples(db: Session, vin: str) -> list[TelemetrySample]:
    query = select(TelemetrySample).where(TelemetrySample.vin == vin).order_by(TelemetrySample.seq)
    return list(db.scalars(query))


def state_of(db: Session, fleet: Fleet) -> VehicleState:
    db.expire_all()
    return db.get_one(VehicleState, fleet.order.vehicle_id)


@contextmanager
def statements(connection: Connection) -> Iterator[list[str]]:
    """The SQL statements sent on `connection` inside the block (without the savepoints that
    stand in for the test's transactions)."""
    sent: list[str] = []

    def keep(*args: Any) -> None:
        if not args[2].startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):
            sent.append(args[2])

    event.listen(connection, "before_cursor_execute", keep)
    try:
        yield sent
    finally:
        event.remove(connection, "before_cursor_execute", keep)


def test_a_batch_sent_twice_is_stored_once(db: Session, clock: FixedClock, fleet: Fleet) -> None:
    now = clock.now()
    batch = [telemetry(fleet.order.vin, seq, now + minutes(seq)) for seq in range(1, 4)]
    assert ingest.store_telemetry(db, batch, now=now) == 3
    assert ingest.store_telemetry(db, batch, now=now) == 0
    assert ingest.store_telemetry(db, [*batch, batch[0]], now=now) == 0
    assert [sample.seq for sample in samples(db, fleet.order.vin)] == [1, 2, 3]


def test_without_consent_only_what_the_service_needs_is_kept(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    now = clock.now()
    ingest.store_telemetry(db, [telemetry(fleet.order.vin, 1, now)], now=now)
    [kept] = samples(db, fleet.order.vin)
    assert (kept.odometer_km, kept.software_version, kept.parked) == (1001.0, "7.2.0", False)
    assert kept.battery_percent == 80.0
    assert (kept.speed_kmh, kept.readings, kept.latitude, kept.longitude) == (None,) * 4
    state = state_of(db, fleet)
    assert (state.speed_kmh, state.latitude, state.longitude) == (None, None, None)
    assert state.odometer_km == 1001.0


def test_each_consent_keeps_its_own_data(db: Session, clock: FixedClock, fleet: Fleet) -> None:
    now = clock.now()
    consent(db, fleet.customer_id, now, location_history=True)
    ingest.store_telemetry(db, [telemetry(fleet.order.vin, 1, now)], now=now)
    consent(db, fleet.customer_id, now, location_history=False, driving_style=True)
    ingest.store_telemetry(db, [telemetry(fleet.order.vin, 2, now + minutes(1))], now=now)
    located, driven = samples(db, fleet.order.vin)
    assert (located.latitude, located.longitude) == (40.4168, -3.7038)
    assert (located.speed_kmh, located.readings) == (None, None)
    assert (driven.latitude, driven.longitude) == (None, None)
    assert (driven.speed_kmh, driven.readings) == (87.5, {"outside_temperature_c": 4.5})


def test_withdrawing_consent_stops_the_storing_from_then_on(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    vin = fleet.order.vin
    consent(db, fleet.customer_id, clock.now(), location_history=True, driving_style=True)
    ingest.store_telemetry(db, [telemetry(vin, 1, clock.now())], now=clock.now())
    assert state_of(db, fleet).latitude == 40.4168

    clock.advance(timedelta(hours=1))
    consent(db, fleet.customer_id, clock.now(), location_history=False, driving_style=False)
    ingest.store_telemetry(db, [telemetry(vin, 2, clock.now())], now=clock.now())

    before, after = samples(db, vin)
    assert (before.latitude, before.speed_kmh) == (40.4168, 87.5)  # kept: given with consent
    assert (after.latitude, after.longitude, after.speed_kmh, after.readings) == (None,) * 4
    state = state_of(db, fleet)
    assert (state.latitude, state.longitude, state.speed_kmh) == (None, None, None)


def test_the_latest_state_follows_the_newest_sample_whatever_order_they_arrive_in(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    now, vin = clock.now(), fleet.order.vin
    newest = telemetry(vin, 7, now + minutes(7), odometer_km=1500.0, parked=True)
    older = telemetry(vin, 5, now + minutes(5), odometer_km=1400.0, parked=False)
    ingest.store_telemetry(db, [newest], now=now)
    ingest.store_telemetry(db, [older], now=now + minutes(8))
    state = state_of(db, fleet)
    assert (state.telemetry_seq, state.parked, state.odometer_km) == (7, True, 1500.0)
    assert state.last_seen_at == now + minutes(8)
    assert ingest.latest_odometer(db, fleet.order.vehicle_id) == 1500.0


def test_the_odometer_never_goes_back(db: Session, clock: FixedClock, fleet: Fleet) -> None:
    now, vin = clock.now(), fleet.order.vin
    ingest.store_telemetry(db, [telemetry(vin, 1, now, odometer_km=2000.0)], now=now)
    ingest.store_telemetry(db, [telemetry(vin, 2, now + minutes(1), odometer_km=5.0)], now=now)
    assert ingest.latest_odometer(db, fleet.order.vehicle_id) == 2000.0


def test_a_car_that_never_reported_has_no_odometer(db: Session, fleet: Fleet) -> None:
    assert ingest.latest_odometer(db, fleet.order.vehicle_id) is None
    assert ingest.latest_state(db, fleet.order.vehicle_id) is None


def test_a_new_software_version_updates_the_car_and_its_history(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    now, vin = clock.now(), fleet.order.vin
    ingest.store_telemetry(db, [telemetry(vin, 1, now, software_version="7.3.0")], now=now)
    ingest.store_telemetry(
        db, [telemetry(vin, 2, now + minutes(1), software_version="7.3.0")], now=now
    )
    # A late sample from before the update does not turn the record back.
    ingest.store_telemetry(db, [telemetry(vin, 0, now - minutes(1))], now=now)
    db.expire_all()
    assert db.get_one(Vehicle, fleet.order.vehicle_id).software_version == "7.3.0"
    assert state_of(db, fleet).software_version == "7.3.0"
    changes = [
        (entry.from_state, entry.to_state, entry.actor_kind)
        for entry in subject_history(db, "vehicle", fleet.order.vehicle_id)
        if entry.event == "car.software_reported"
    ]
    assert changes == [("7.2.0", "7.3.0", "vehicle")]


def test_messages_of_unknown_cars_are_dropped(db: Session, clock: FixedClock, fleet: Fleet) -> None:
    now, stranger = clock.now(), make_vin("WC9", "AURA1", model_year_code(2026), "M", 999_999)
    assert ingest.store_telemetry(db, [telemetry(stranger, 1, now)], now=now) == 0
    assert ingest.store_usage_events(db, [usage(stranger, 1, now)], now=now) == 0
    assert ingest.store_status(db, status(stranger, now, online=True), now=now) is False
    assert samples(db, stranger) == []


def test_usage_events_are_stored_once_by_vin_and_sequence(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    now, vin = clock.now(), fleet.order.vin
    events = [usage(vin, seq, now + minutes(seq)) for seq in (1, 2)]
    assert ingest.store_usage_events(db, events, now=now) == 2
    assert ingest.store_usage_events(db, [events[1], usage(vin, 3, now)], now=now) == 1
    stored = db.scalars(select(FeatureUsage).where(FeatureUsage.vin == vin)).all()
    assert sorted((e.seq, e.feature, e.unit, e.quantity) for e in stored) == [
        (seq, "power_boost", "hour", 0.25) for seq in (1, 2, 3)
    ]


def test_online_status_follows_the_newest_message(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    now, vin = clock.now(), fleet.order.vin
    assert ingest.store_status(db, status(vin, now, online=True, software="7.2.1"), now=now)
    assert state_of(db, fleet).online is True
    # The last will carries the moment the car connected: older than a later "online".
    assert ingest.store_status(db, status(vin, now + minutes(5), online=False), now=now)
    assert not ingest.store_status(db, status(vin, now, online=True), now=now + minutes(6))
    state = state_of(db, fleet)
    assert (state.online, state.status_at, state.software_version) == (
        False,
        now + minutes(5),
        "7.2.1",
    )
    db.expire_all()
    assert db.get_one(Vehicle, fleet.order.vehicle_id).software_version == "7.2.1"


def test_the_last_will_of_a_connection_beats_its_online_status(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    """The will is written when the car connects: it carries an older time than the online
    status of the same connection, and must win all the same."""
    now, vin = clock.now(), fleet.order.vin
    connected = now + minutes(1)
    assert ingest.store_status(db, status(vin, connected, online=True, session=7), now=now)
    assert ingest.store_status(db, status(vin, now, online=False, session=7), now=now)
    assert state_of(db, fleet).online is False
    # The same will again (retained, read at a worker's reconnect) is no news.
    assert not ingest.store_status(db, status(vin, now, online=False, session=7), now=now)
    # The online status of that connection arriving late does not bring the car back.
    assert not ingest.store_status(db, status(vin, connected, online=True, session=7), now=now)
    assert state_of(db, fleet).online is False


def test_a_stale_will_after_the_car_came_back_changes_nothing(
    db: Session, clock: FixedClock, fleet: Fleet
) -> None:
    now, vin = clock.now(), fleet.order.vin
    assert ingest.store_status(db, status(vin, now, online=True, session=7), now=now)
    assert ingest.store_status(db, status(vin, now, online=False, session=7), now=now)
    # The car reconnects (even with its clock unchanged): a newer connection.
    assert ingest.store_status(db, status(vin, now, online=True, session=8), now=now)
    assert state_of(db, fleet).online is True
    # The previous connection's will, delivered late (retained, or a session takeover).
    assert not ingest.store_status(db, status(vin, now, online=False, session=7), now=now)
    state = state_of(db, fleet)
    assert (state.online, state.status_session) == (True, 8)


def test_a_telemetry_batch_takes_four_statements_whatever_its_size(
    db: Session, settings: Settings, clock: FixedClock, connection: Connection
) -> None:
    now = clock.now()
    few = owned_fleet(db, settings=settings, now=now, cars=1)
    many = owned_fleet(db, settings=settings, now=now, cars=30, country="FR")
    consent(db, many.customer_id, now, location_history=True)

    def batch(fleet: Fleet, first_seq: int) -> list[Any]:
        return [
            telemetry(vin, seq, now + minutes(seq))
            for vin in fleet.vins
            for seq in range(first_seq, first_seq + 5)
        ]

    with statements(connection) as small:
        assert ingest.store_telemetry(db, batch(few, 1), now=now) == 5
    with statements(connection) as large:
        assert ingest.store_telemetry(db, batch(many, 1), now=now) == 150
    with statements(connection) as again:
        assert ingest.store_telemetry(db, batch(many, 3), now=now) == 60
    # The cars, the owners' consents, the samples, the latest states.
    assert len(small) == len(large) == len(again) == 4, large
    assert db.scalar(select(func.count()).select_from(TelemetrySample)) >= 215


def test_usage_and_status_take_a_fixed_number_of_statements(
    db: Session, settings: Settings, clock: FixedClock, connection: Connection
) -> None:
    now = clock.now()
    fleet = owned_fleet(db, settings=settings, now=now, cars=10)
    events = [usage(vin, seq, now) for vin in fleet.vins for seq in range(20)]
    with statements(connection) as sent:
        assert ingest.store_usage_events(db, events, now=now) == 200
    assert len(sent) == 2  # the cars, the events
    with statements(connection) as sent:
        ingest.store_status(db, status(fleet.vins[0], now, online=True), now=now)
    assert len(sent) == 2  # the car, its state
