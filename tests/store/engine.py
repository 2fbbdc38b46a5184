"""Builders for the entitlements engine's tests: a delivered car, its options, its versions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.catalog.models import Feature
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial, ensure_demo_keys
from caas.ota.models import ConfigurationVersion
from caas.ota.service import use_signing_material
from caas.protocol.mqtt import FeatureState, ManifestBody
from caas.store import entitlements
from caas.store.models import Entitlement
from caas.vehicles.models import Vehicle
from tests.vehicles.support import Car, born_car, deliver

SHOP = Actor(kind="system", label="store test")


@pytest.fixture(scope="session")
def engine_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningMaterial:
    return ensure_demo_keys(tmp_path_factory.mktemp("engine-keys"))


@pytest.fixture
def signing(engine_keys: SigningMaterial) -> Iterator[SigningMaterial]:
    """The platform signs with demo keys during the test."""
    use_signing_material(engine_keys)
    yield engine_keys
    use_signing_material(None)


@dataclass(frozen=True)
class Delivered:
    """A car delivered to its owner with the plan's `driver_assist` for 48 months."""

    car: Car
    vehicle: Vehicle


@pytest.fixture
def delivered(
    db: Session, settings: Settings, clock: FixedClock, signing: SigningMaterial
) -> Delivered:
    car = born_car(db, settings=settings, now=clock.now())
    deliver(db, car, now=clock.now())
    return Delivered(car, db.get_one(Vehicle, car.vehicle_id))


def feature(db: Session, vehicle: Vehicle, code: str) -> Feature:
    return db.scalars(
        select(Feature).where(Feature.platform_id == vehicle.platform_id, Feature.code == code)
    ).one()


def give(
    db: Session,
    delivered: Delivered,
    code: str,
    valid_from: datetime,
    valid_until: datetime | None,
    *,
    source: str = "purchase",
    state: str = "active",
    now: datetime,
) -> Entitlement:
    return entitlements.grant(
        db,
        vehicle=delivered.vehicle,
        feature=feature(db, delivered.vehicle, code),
        source=source,
        valid_from=valid_from,
        valid_until=valid_until,
        state=state,
        customer_id=delivered.car.customer_id,
        actor=SHOP,
        now=now,
    )


def versions(db: Session, vehicle: Vehicle) -> list[ConfigurationVersion]:
    """The car's versions, oldest first."""
    db.flush()
    return list(
        db.scalars(
            select(ConfigurationVersion)
            .where(ConfigurationVersion.vehicle_id == vehicle.id)
            .order_by(ConfigurationVersion.version)
        )
    )


def newest_features(db: Session, vehicle: Vehicle) -> dict[str, FeatureState]:
    """The features on in the car's newest version, by code."""
    body = ManifestBody.model_validate(versions(db, vehicle)[-1].body)
    return {state.code: state for state in body.features if state.enabled}
