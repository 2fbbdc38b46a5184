"""Builders for the twin and OTA tests: cars born as the factory makes them, a database whose
transactions really commit (for the worker, LISTEN/NOTIFY and concurrency), the platform's own
signing keys, and simulated cars on a real broker.

Import the fixtures a module needs (pytest finds fixtures by name):

    from tests.vehicles.support import committed, signing  # noqa: F401
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from caas.core.db import make_engine, make_session_factory, unit_of_work
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.iot.service import rotate_car_password
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial, ensure_demo_keys
from caas.ota.models import ConfigurationVersion
from caas.protocol.manifest import public_key_b64
from caas.protocol.vin import make_vin
from caas.sales import service as sales
from caas.sales.models import Customer, Sale
from caas.sales.schemas import CommercialPlan, CustomerIdentity
from caas.store.entitlements import grant_plan
from caas.vehicles import service as vehicles
from caas.vehicles.models import Vehicle
from tests.conftest import ScratchDatabases
from tests.factories import customer_payload, salesperson

T = TypeVar("T")
FACTORY = Actor(kind="factory", label="factory")
WAIT = 10.0  # seconds: a bound for real concurrency on a busy machine, never a schedule

_serials = itertools.count(secrets.randbelow(900_000))


def fresh_vin() -> str:
    return make_vin("VCA", "AURA0", "T", "M", next(_serials))


def fresh_dni() -> str:
    """A valid Spanish national id no other car's owner has (commits are real here)."""
    number = secrets.randbelow(10**8)
    return f"{number:08d}{'TRWAGMYFPDXBNJZSQVHLCKE'[number % 23]}"


@dataclass(frozen=True)
class Car:
    """A car as the factory built it, with what the factory flashed into it."""

    vehicle_id: int
    vin: str
    sale_id: int
    customer_id: int
    customer_user_id: int
    customer_email: str
    password: str  # its broker password


def born_car(
    session: Session,
    *,
    settings: Settings,
    now: datetime,
    features: tuple[str, ...] = ("driver_assist",),
    platform: str = "AURA",
    service_period_months: int = 48,
) -> Car:
    """A sale, and its car born at the factory (credentials and configuration version 1)."""
    sale = sales.create_sale(
        session,
        salesperson=salesperson(session, "ES"),
        identity=CustomerIdentity(**customer_payload("ES", national_id=fresh_dni())),
        plan=CommercialPlan(
            platform=platform,
            features=list(features),
            service_period_months=service_period_months,
            maintenance_included=False,
        ),
        settings=settings,
        now=now,
    )
    sale.state = "assembly"
    vin = fresh_vin()
    vehicle = vehicles.record_birth(
        session,
        vin=vin,
        public_key=public_key_b64(Ed25519PrivateKey.generate()),
        sale_id=sale.id,
        platform_id=sale.platform_id,
        owner_customer_id=sale.customer_id,
        software_version="7.2.0",
        built_at=now,
        actor=FACTORY,
        now=now,
    )
    # Born here without the factory (no stage event, so no provisioning bundle to flash): the
    # test plays the end of line with a fresh password (the broker gets it from the worker).
    # Cars born through the factory get theirs flashed: tests/factory/test_provisioning.py.
    password = rotate_car_password(session, vin=vin, now=now, settings=settings)
    customer = session.get_one(Customer, sale.customer_id)
    return Car(
        vehicle_id=vehicle.id,
        vin=vin,
        sale_id=sale.id,
        customer_id=customer.id,
        customer_user_id=customer.user_id,
        customer_email=customer.email,
        password=password,
    )


def deliver(session: Session, car: Car, *, now: datetime) -> ConfigurationVersion:
    """The car reaches its owner: the plan's features are on from now (a new version)."""
    vehicle = session.get_one(Vehicle, car.vehicle_id)
    vehicle.delivered_at = now
    grant_plan(session, vehicle, session.get_one(Sale, car.sale_id), actor=FACTORY, now=now)
    return ota.request_configuration(session, vehicle, reason="delivered", actor=FACTORY, now=now)


def versions(session: Session, car: Car) -> dict[int, ConfigurationVersion]:
    """The car's versions by number, as stored now."""
    session.flush()
    session.expire_all()
    rows = session.scalars(
        select(ConfigurationVersion).where(ConfigurationVersion.vehicle_id == car.vehicle_id)
    )
    return {row.version: row for row in rows}


# --- the platform's signing keys ------------------------------------------------------------


@pytest.fixture
def signing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningMaterial]:
    """The platform signs with demo keys of this test (their root is what cars pin)."""
    material = ensure_demo_keys(tmp_path_factory.mktemp("keys"))
    ota.use_signing_material(material)
    yield material
    ota.use_signing_material(None)


def rogue_material(directory: Path) -> SigningMaterial:
    """Signing material certified by another root than the one the cars pin."""
    return ensure_demo_keys(directory)


# --- a database whose transactions commit -----------------------------------------------------


@dataclass
class CommittedDatabase:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    def run(self, work: Callable[[Session], T]) -> T:
        """`work` in one transaction, committed."""
        with unit_of_work(self.sessions) as session:
            return work(session)


_databases: dict[str, CommittedDatabase] = {}


@pytest.fixture(scope="session")
def committed(
    request: pytest.FixtureRequest, scratch_databases: ScratchDatabases
) -> CommittedDatabase:
    """A database of these tests (schema and demo data) whose commits are real: for threads,
    the worker and LISTEN/NOTIFY. Tests add their own cars and never clean them up."""
    if "committed" not in _databases:
        url = scratch_databases.create()
        engine = make_engine(url)
        _databases["committed"] = CommittedDatabase(url, engine, make_session_factory(engine))

        def dispose() -> None:
            _databases.pop("committed", None)
            engine.dispose()

        request.config.add_cleanup(dispose)
    return _databases["committed"]


# --- waiting for real concurrency -------------------------------------------------------------


def wait_until(check: Callable[[], T | None], *, timeout: float = WAIT, what: str = "") -> T:
    """Poll `check` until it answers (not None/False), for real concurrency only."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what or check}")
        time.sleep(0.005)


async def eventually(check: Callable[[], T | None], *, timeout: float = WAIT, what: str = "") -> T:
    """`wait_until` for async tests: the loop (and the cars on it) keeps running meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await asyncio.to_thread(check)
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what or check}")
        await asyncio.sleep(0.005)


def state_of(database: CommittedDatabase, car: Car, version: int) -> str | None:
    def read(session: Session) -> str | None:
        return session.scalar(
            select(ConfigurationVersion.state).where(
                ConfigurationVersion.vehicle_id == car.vehicle_id,
                ConfigurationVersion.version == version,
            )
        )

    return database.run(read)


def in_state(database: CommittedDatabase, car: Car, version: int, state: str) -> Callable[[], bool]:
    return lambda: state_of(database, car, version) == state
