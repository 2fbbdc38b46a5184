"""The car's screen shows what was booked: the booking travels in the messages of the car's
next signed configuration, which the worker issues when an order is booked or ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.outbox import Relay
from caas.core.settings import Settings
from caas.ota.models import ConfigurationVersion
from caas.protocol.vin import make_vin
from caas.upkeep import consent, orders
from caas.upkeep.jobs import handlers
from caas.vehicles.models import Vehicle
from tests.files.customers import SoldCustomer, car_for, sold_customer
from tests.store.engine import engine_keys, signing

__all__ = ["engine_keys", "signing"]

VIN = make_vin("UPK", "SCRN0", "T", "M", 1)
DELIVERED = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def owner(db: Session, settings: Settings) -> SoldCustomer:
    return sold_customer(db, settings=settings, now=DELIVERED - timedelta(days=60))


@pytest.fixture
def car(db: Session, owner: SoldCustomer) -> Vehicle:
    vehicle = car_for(
        db, owner.sale, vin=VIN, built_at=DELIVERED - timedelta(days=20), delivered_at=DELIVERED
    )
    db.commit()
    return vehicle


def messages(db: Session, car: Vehicle) -> list[list[str]]:
    db.expire_all()
    return [
        list(version.body["messages"])
        for version in db.scalars(
            select(ConfigurationVersion)
            .where(ConfigurationVersion.vehicle_id == car.id)
            .order_by(ConfigurationVersion.version)
        )
    ]


def test_a_booking_shows_on_the_cars_screen_until_it_is_cancelled(
    db: Session,
    car: Vehicle,
    owner: SoldCustomer,
    clock: FixedClock,
    settings: Settings,
    sessions: sessionmaker[Session],
    signing: object,
) -> None:
    actor = Actor(kind="customer", label=owner.email, user_id=owner.user.id)
    consent.set_preferences(
        db,
        customer=owner.customer,
        auto_order=True,
        auto_limit_minor=100_000,
        preferred_workshop_id=None,
        actor=actor,
        now=clock.now(),
    )
    order = orders.propose(
        db, vehicle_id=car.id, need="tyre_tread", detail={}, actor=Actor.system(), now=clock.now()
    )
    assert order is not None
    db.commit()
    worker = Relay(sessions=sessions, clock=clock, handlers=handlers(settings, clock))
    while worker.run_once():
        pass
    # Thursday 15 January 2026, 14:00 in Madrid, in the owner's language.
    assert messages(db, car) == [
        ["Cambio de neumáticos reservado: jue 15 ene 14:00 en Taller Norte"]
    ]
    orders.cancel(db, order, actor=actor, reason="", now=clock.now())
    db.commit()
    while worker.run_once():
        pass
    assert messages(db, car)[-1] == []
