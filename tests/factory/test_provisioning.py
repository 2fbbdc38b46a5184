"""The car's birth reaches the car: the platform hands the factory the car's provisioning bundle
(broker account and password, broker address, pinned root key) to flash at the end of the line,
keeps no password afterwards, and the car starts with what was flashed into it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.history import subject_history
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.iot.models import BrokerCredential
from caas.iot.passwords import verify_password
from caas.iot.service import find_credential, rotate_car_password
from caas.ota.keys import SigningMaterial
from caas.protocol.factory import API_KEY_HEADER, PRODUCTION_STAGE, STAGES, provisioning_path
from caas.protocol.manifest import public_key_b64
from caas.sales.models import Sale
from caas.vehicles.models import Vehicle
from caas.vehicles.service import vehicle_for_sale
from caas.worker import build_relay
from caas_sim.vehicle.agent import VehicleAgent
from caas_sim.vehicle.fleet import car_from_factory
from tests.factory.conftest import (
    FACTORY_API_KEY,
    FactorySim,
    WebhookInbox,
    deposited_sale,
    post_webhook,
)
from tests.mqtt import mqtt_broker
from tests.vehicles.support import signing

__all__ = ["mqtt_broker", "signing"]


@pytest.fixture
def settings(settings: Settings, mqtt_broker: LocalBroker) -> Settings:
    """The factory simulator's settings, and a real broker the worker gives passwords to."""
    return settings.model_copy(
        update={
            "mqtt_url": mqtt_broker.service_url,
            "mqtt_admin_username": mqtt_broker.admin_username,
            "mqtt_admin_password": mqtt_broker.admin_password,
        }
    )


def born_at_the_factory(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
    factory_sim: FactorySim,
    inbox: WebhookInbox,
) -> tuple[Sale, Vehicle]:
    """An order placed and walked to production; the platform got the factory's events."""
    sale = deposited_sale(db, settings, clock)
    build_relay(settings, sessions, clock).run_once()
    for _ in STAGES[: STAGES.index(PRODUCTION_STAGE) + 1]:
        assert factory_sim.advance(sale.number)["delivered"]
        response = post_webhook(app_client, inbox.last())
        assert response.status_code == 200, response.text
    db.expire_all()
    vehicle = vehicle_for_sale(db, sale.id)
    assert vehicle is not None
    return sale, vehicle


def credential_of(db: Session, vin: str) -> BrokerCredential:
    db.expire_all()
    credential = find_credential(db, vin)
    assert credential is not None
    return credential


def test_the_car_born_at_the_factory_gets_its_bundle_flashed_and_connects_with_it(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
    factory_sim: FactorySim,
    inbox: WebhookInbox,
    signing: SigningMaterial,
    mqtt_broker: LocalBroker,
) -> None:
    _, vehicle = born_at_the_factory(db, sessions, settings, clock, app_client, factory_sim, inbox)
    floor = factory_sim.app.state.floor
    assert floor.car(vehicle.vin).provisioning is None  # nothing leaves before the relay
    assert credential_of(db, vehicle.vin).bundle_secret is not None
    assert car_from_factory(factory_sim.url, vehicle.vin) is None

    build_relay(settings, sessions, clock).run_once(limit=100)

    bundle = floor.car(vehicle.vin).provisioning
    assert bundle is not None
    assert (bundle.vin, bundle.mqtt_username) == (vehicle.vin, vehicle.vin)
    assert bundle.broker_url == mqtt_broker.url
    assert bundle.root_public_key == public_key_b64(signing.root_public_key)
    assert bundle.mqtt_password not in repr(bundle)
    # The broker has the password and the platform only its hash: no copy, even sealed.
    credential = credential_of(db, vehicle.vin)
    assert (credential.pending_secret, credential.bundle_secret) == (None, None)
    assert credential.bundle_delivered_at == clock.now()
    assert verify_password(credential.password_hash, bundle.mqtt_password)
    events = [e.event for e in subject_history(db, "broker_credential", credential.id)]
    assert events == [
        "car.broker_credentials_issued",
        "car.provisioning_queued",
        "car.provisioning_flashed",
    ]

    # The car starts as the factory built it: its own key, the flashed password and broker.
    flashed = car_from_factory(factory_sim.url, vehicle.vin)
    assert flashed is not None
    assert public_key_b64(flashed.identity.private_key) == vehicle.public_key
    assert (flashed.broker.host, flashed.broker.port) == (mqtt_broker.host, mqtt_broker.port)
    asyncio.run(connects(VehicleAgent(flashed.identity, flashed.broker)))


async def connects(agent: VehicleAgent) -> None:
    agent.start()
    try:
        await agent.wait_online(10)  # TimeoutError when the broker refuses it
    finally:
        await agent.stop()


def test_the_bundle_waits_while_the_factory_is_down_and_follows_a_rotation(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
    factory_sim: FactorySim,
    inbox: WebhookInbox,
    signing: SigningMaterial,
) -> None:
    _, vehicle = born_at_the_factory(db, sessions, settings, clock, app_client, factory_sim, inbox)
    factory_sim.outage(True)
    relay = build_relay(settings, sessions, clock)
    relay.run_once(limit=100)
    assert credential_of(db, vehicle.vin).bundle_secret is not None  # kept, sealed, for a retry
    assert factory_sim.app.state.floor.car(vehicle.vin).provisioning is None

    # Rotated meanwhile: the factory must flash the newest password, not the birth one.
    newest = rotate_car_password(db, vin=vehicle.vin, now=clock.now(), settings=settings)
    db.commit()
    factory_sim.outage(False)
    clock.advance(relay.backoff(1) + timedelta(seconds=1))
    relay.run_once(limit=100)
    bundle = factory_sim.app.state.floor.car(vehicle.vin).provisioning
    assert bundle is not None and bundle.mqtt_password == newest
    assert credential_of(db, vehicle.vin).bundle_secret is None


def test_the_factory_flashes_only_cars_it_built_for_a_caller_with_its_key(
    factory_sim: FactorySim, signing: SigningMaterial
) -> None:
    bundle = {
        "vin": "1M8GDM9AXKP042788",
        "mqtt_username": "1M8GDM9AXKP042788",
        "mqtt_password": "x" * 43,
        "broker_url": "mqtt://127.0.0.1:1883",
        "root_public_key": public_key_b64(signing.root_public_key),
    }
    url = factory_sim.url + provisioning_path(bundle["vin"])
    keyed = {API_KEY_HEADER: FACTORY_API_KEY}
    assert httpx.put(url, json=bundle).status_code == 401
    unknown = httpx.put(url, json=bundle, headers=keyed)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "car.not_found")
    other = httpx.put(url, json={**bundle, "mqtt_username": "someone"}, headers=keyed)
    assert other.status_code == 422
    elsewhere = factory_sim.url + provisioning_path("VCAAURA02TM000001")
    mismatch = httpx.put(elsewhere, json=bundle, headers=keyed)
    assert (mismatch.status_code, mismatch.json()["code"]) == (422, "provisioning.vin_mismatch")
