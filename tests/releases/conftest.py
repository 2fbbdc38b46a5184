"""Shared by the releases' tests: the platform (API over real HTTP, worker with its MQTT bridge)
on a committed database, simulated cars on a real broker that download from it, and builders
of releases and rollouts through the operator's API.

Every test's cars run a software version of their own (`fleet_version`), and its releases
require it as their minimum, so a rollout never reaches the cars of other tests that share
the committed database.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from tests.conftest import SmtpInbox
from tests.mqtt import V311, mqtt_broker
from tests.servers import ServerThread
from tests.vehicles.support import (
    Car,
    CommittedDatabase,
    born_car,
    committed,
    deliver,
    signing,
    wait_until,
)

from caas.app import create_app
from caas.core.clock import SystemClock
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.iot.service import find_credential
from caas.ota.keys import SigningMaterial
from caas.releases.models import Rollout, RolloutTarget
from caas.seed import DEMO_PASSWORD
from caas.vehicles.models import Vehicle
from caas.worker import Worker, build_worker
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent

__all__ = ["committed", "mqtt_broker", "signing"]

OPERATOR = "operator@caas.example"
_majors = itertools.count(100 + secrets.randbelow(1000) * 100)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fleet_version() -> str:
    """The software this test's cars run (no other test's cars run it or newer)."""
    return f"{next(_majors)}.0.0"


@pytest.fixture
def platform_settings(
    committed: CommittedDatabase, mqtt_broker: LocalBroker, smtp_server: SmtpInbox, tmp_path: Path
) -> Settings:
    return Settings(
        env="test",
        database_url=committed.url,
        data_dir=tmp_path / "data",
        mqtt_url=mqtt_broker.service_url,
        mqtt_admin_username=mqtt_broker.admin_username,
        mqtt_admin_password=mqtt_broker.admin_password,
        smtp_url=f"smtp://127.0.0.1:{smtp_server.port}",
        public_url="http://testserver",
        ota_keys_dir=tmp_path / "keys",
    )


@pytest.fixture
def worker(
    platform_settings: Settings, committed: CommittedDatabase, signing: SigningMaterial
) -> Iterator[Worker]:
    worker = build_worker(platform_settings, committed.sessions, SystemClock())
    worker.start()
    assert worker.bridge is not None and worker.bridge.connected.wait(10)
    yield worker
    worker.stop()


@pytest.fixture
def platform_http(
    platform_settings: Settings, committed: CommittedDatabase
) -> Iterator[ServerThread]:
    """The platform's API on a real port: where the cars download their images."""
    server = ServerThread(create_app(settings=platform_settings, sessions=committed.sessions))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def operator(platform_settings: Settings, committed: CommittedDatabase) -> Iterator[TestClient]:
    """The operator, logged in to the API."""
    client = TestClient(create_app(settings=platform_settings, sessions=committed.sessions))
    with client:
        response = client.post(
            "/api/v1/auth/login", json={"email": OPERATOR, "password": DEMO_PASSWORD}
        )
        assert response.status_code == 200, response.text
        yield client


@pytest.fixture
async def online() -> AsyncIterator[list[VehicleAgent]]:
    agents: list[VehicleAgent] = []
    yield agents
    await asyncio.gather(*(agent.stop() for agent in agents))


def delivered_cars(
    committed: CommittedDatabase, settings: Settings, count: int, version: str
) -> list[Car]:
    """`count` cars delivered to their owners, running `version`, with broker accounts."""
    now = datetime.now(UTC)

    def build(session: Session) -> list[Car]:
        cars = [born_car(session, settings=settings, now=now) for _ in range(count)]
        session.execute(
            update(Vehicle)
            .where(Vehicle.id.in_([car.vehicle_id for car in cars]))
            .values(software_version=version)
        )
        for car in cars:
            deliver(session, car, now=now)
        return cars

    cars = committed.run(build)

    def provisioned(session: Session) -> bool:
        found = [find_credential(session, car.vin) for car in cars]
        return all(c is not None and c.pending_secret is None for c in found)

    wait_until(lambda: committed.run(provisioned), what="the cars' broker credentials")
    return cars


async def start_car(
    car: Car,
    *,
    broker: LocalBroker,
    signing: SigningMaterial,
    platform_url: str,
    version: str,
    online: list[VehicleAgent],
    install_failure_rate: float = 0.0,
) -> VehicleAgent:
    agent = VehicleAgent(
        CarIdentity(
            vin=car.vin,
            password=car.password,
            private_key=Ed25519PrivateKey.generate(),
            root_public_key=signing.root_public_key,
        ),
        BrokerEndpoint(broker.host, broker.port, V311),
        software_version=version,
        model="AURA",
        platform_url=platform_url,
        install_failure_rate=install_failure_rate,
    )
    online.append(agent)
    agent.start()
    await agent.wait_online(10)
    return agent


def key() -> str:
    return f"test-{secrets.token_hex(8)}"


def upload_release(
    operator: TestClient,
    *,
    version: str,
    min_version: str,
    image: bytes = b"",
    publish: bool = True,
) -> dict[str, Any]:
    """A release of AURA software `version` for cars running `min_version` or newer."""
    response = operator.post(
        "/api/v1/software/releases",
        data={
            "platform": "AURA",
            "version": version,
            "notes": "Faster maps.",
            "models": "AURA",
            "min_version": min_version,
        },
        files={"image": ("image.bin", image or secrets.token_bytes(4096))},
        headers={"Idempotency-Key": key()},
    )
    assert response.status_code == 201, response.text
    release: dict[str, Any] = response.json()
    if publish:
        published = operator.post(
            f"/api/v1/software/releases/{release['id']}/publish",
            headers={"Idempotency-Key": key()},
        )
        assert published.status_code == 200, published.text
        release = published.json()
    return release


def start_rollout(operator: TestClient, release_id: int, **terms: Any) -> dict[str, Any]:
    response = operator.post(
        f"/api/v1/software/releases/{release_id}/rollouts",
        json=terms,
        headers={"Idempotency-Key": key()},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@dataclass(frozen=True)
class Progress:
    state: str
    targets: dict[str, tuple[str, int, str | None]]  # VIN: (state, wave, error)


def progress(committed: CommittedDatabase, rollout_id: int) -> Progress:
    def read(session: Session) -> Progress:
        rollout = session.get_one(Rollout, rollout_id)
        rows = session.execute(
            select(Vehicle.vin, RolloutTarget.state, RolloutTarget.wave, RolloutTarget.error)
            .join(Vehicle, Vehicle.id == RolloutTarget.vehicle_id)
            .where(RolloutTarget.rollout_id == rollout_id)
        )
        return Progress(
            rollout.state, {vin: (state, wave, error) for vin, state, wave, error in rows}
        )

    return committed.run(read)
