"""Builders for tests about cars already on the road: an owner, their cars, what a car sends."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy.orm import Session

from caas.core.history import Actor
from caas.core.settings import Settings
from caas.privacy import service as privacy
from caas.privacy.rules import Purpose
from caas.protocol.mqtt import Status, Telemetry, UsageEvent
from caas.protocol.vin import make_vin, model_year_code
from caas.vehicles.models import Vehicle
from tests.registration.support import Order, order_in_state

_serials = itertools.count(500_000)


@dataclass
class Fleet:
    """A customer who owns some delivered cars."""

    order: Order
    vins: list[str]

    @property
    def customer_id(self) -> int:
        return self.order.customer_id


def owned_fleet(
    db: Session, *, settings: Settings, now: datetime, cars: int = 1, country: str = "ES"
) -> Fleet:
    """A delivered order's car and `cars - 1` more cars of the same owner (committed); one
    owner per country in a test."""
    order = order_in_state(db, settings=settings, now=now, state="delivered", country=country)
    first = db.get_one(Vehicle, order.vehicle_id)
    first.delivered_at = now
    vins = [order.vin]
    for _ in range(cars - 1):
        vin = make_vin("WC9", "AURA1", model_year_code(2026), "M", next(_serials))
        db.add(
            Vehicle(
                vin=vin,
                platform_id=first.platform_id,
                owner_customer_id=order.customer_id,
                public_key="test-public-key",
                software_version="7.2.0",
                built_at=now,
                delivered_at=now,
            )
        )
        vins.append(vin)
    db.commit()
    return Fleet(order, vins)


def consent(db: Session, customer_id: int, now: datetime, **choices: bool) -> None:
    chosen = cast(dict[Purpose, bool], choices)
    privacy.set_consents(
        db, customer_id=customer_id, choices=chosen, actor=Actor.system("test"), now=now
    )


def telemetry(vin: str, seq: int, at: datetime, **fields: Any) -> Telemetry:
    values: dict[str, Any] = {
        "vin": vin,
        "seq": seq,
        "at": at,
        "odometer_km": 1000.0 + seq,
        "software_version": "7.2.0",
        "speed_kmh": 87.5,
        "parked": False,
        "battery_percent": 80.0,
        "location": (40.4168, -3.7038),
        "extra": {"outside_temperature_c": 4.5},
    }
    values.update(fields)
    return Telemetry.model_validate(values)


def usage(vin: str, seq: int, at: datetime, feature: str = "power_boost") -> UsageEvent:
    return UsageEvent(vin=vin, seq=seq, at=at, feature=feature, unit="hour", quantity=0.25)


def status(
    vin: str,
    at: datetime,
    *,
    online: bool,
    software: str | None = None,
    session: int | None = None,
) -> Status:
    return Status(vin=vin, online=online, at=at, session=session, software_version=software)


def minutes(count: int) -> timedelta:
    return timedelta(minutes=count)
