"""A purchase end to end: the customer buys over HTTP, the worker (relay woken by NOTIFY, MQTT
bridge) publishes the configuration to a simulated car on a real broker, the car applies it,
and the purchase is active, captured and invoiced within a second; a car that refuses gets
the money back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.app import create_app
from caas.core.clock import SystemClock
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.iot.service import find_credential
from caas.ota.keys import SigningMaterial
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store.models import Purchase
from caas.worker import Worker, build_worker
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from tests.billing.conftest import API_KEY, PLATFORM_TIMEOUT, WEBHOOK_SECRET, PaymentSandbox
from tests.conftest import SmtpInbox
from tests.mqtt import V311, mqtt_broker
from tests.store.conftest import offer, owner_of
from tests.vehicles.support import (
    Car,
    CommittedDatabase,
    born_car,
    committed,
    deliver,
    eventually,
    signing,
    wait_until,
)

__all__ = ["committed", "mqtt_broker", "signing"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def shop_settings(
    committed: CommittedDatabase,
    mqtt_broker: LocalBroker,
    smtp_server: SmtpInbox,
    payment_sandbox: PaymentSandbox,
    tmp_path: Path,
) -> Settings:
    return Settings(
        env="test",
        database_url=committed.url,
        mqtt_url=mqtt_broker.service_url,
        mqtt_admin_username=mqtt_broker.admin_username,
        mqtt_admin_password=mqtt_broker.admin_password,
        smtp_url=f"smtp://127.0.0.1:{smtp_server.port}",
        public_url="http://testserver",
        ota_keys_dir=tmp_path / "keys",
        payment_url=payment_sandbox.url,
        payment_api_key=API_KEY,
        payment_webhook_secret=WEBHOOK_SECRET,
        payment_timeout_seconds=PLATFORM_TIMEOUT,
    )


@pytest.fixture
def worker(
    shop_settings: Settings, committed: CommittedDatabase, signing: SigningMaterial
) -> Iterator[Worker]:
    worker = build_worker(shop_settings, committed.sessions, SystemClock())
    worker.start()
    assert worker.bridge is not None and worker.bridge.connected.wait(10)
    yield worker
    worker.stop()


@pytest.fixture
async def online() -> AsyncIterator[list[VehicleAgent]]:
    agents: list[VehicleAgent] = []
    yield agents
    await asyncio.gather(*(agent.stop() for agent in agents))


def _delivered_car(committed: CommittedDatabase, settings: Settings) -> tuple[Car, int]:
    """A car delivered to its owner (who can log in), and a one-day power boost offer."""
    now = datetime.now(UTC)
    car = committed.run(lambda session: born_car(session, settings=settings, now=now))

    def delivered(session: Session) -> int:
        deliver(session, car, now=now)
        owner = owner_of(session, car, now)
        return offer(session, owner.vehicle, "power_boost", "window", "1D", net_minor=999).id

    offer_id = committed.run(delivered)

    def credentials(session: Session) -> bool:
        credential = find_credential(session, car.vin)
        return credential is not None and credential.pending_secret is None

    wait_until(lambda: committed.run(credentials), what="the car's broker credentials")
    return car, offer_id


async def _start(
    car: Car, broker: LocalBroker, signing: SigningMaterial, online: list[VehicleAgent]
) -> VehicleAgent:
    agent = VehicleAgent(
        CarIdentity(
            vin=car.vin,
            password=car.password,
            private_key=Ed25519PrivateKey.generate(),
            root_public_key=signing.root_public_key,
        ),
        BrokerEndpoint(broker.host, broker.port, V311),
        software_version="7.2.0",
    )
    online.append(agent)
    agent.start()
    await agent.wait_online(10)
    return agent


def _purchase(committed: CommittedDatabase, purchase_id: int) -> dict[str, Any]:
    def read(session: Session) -> dict[str, Any]:
        purchase = session.get_one(Purchase, purchase_id)
        return {"state": purchase.state, "failure_code": purchase.failure_code}

    return committed.run(read)


def _client(settings: Settings, committed: CommittedDatabase, car: Car) -> TestClient:
    from caas.seed import DEMO_PASSWORD

    client = TestClient(create_app(settings=settings, sessions=committed.sessions))
    response = client.post(
        "/api/v1/auth/login", json={"email": car.customer_email, "password": DEMO_PASSWORD}
    )
    assert response.status_code == 200, response.text
    return client


async def test_a_purchase_is_active_on_the_simulated_car_within_a_second(
    committed: CommittedDatabase,
    shop_settings: Settings,
    mqtt_broker: LocalBroker,
    signing: SigningMaterial,
    worker: Worker,
    payment_sandbox: PaymentSandbox,
    online: list[VehicleAgent],
) -> None:
    car, offer_id = _delivered_car(committed, shop_settings)
    agent = await _start(car, mqtt_broker, signing, online)
    await eventually(lambda: "driver_assist" in agent.active_features, what="the plan applied")

    token = payment_sandbox.token(CARD_SUCCEEDS)
    with _client(shop_settings, committed, car) as client:
        response = client.post(
            f"/api/v1/vehicles/{car.vin}/purchases",
            json={"items": [{"offer_id": offer_id}], "payment_method": token},
            headers={"Idempotency-Key": "mqtt-purchase-0001"},
        )
        assert response.status_code == 201, response.text
        # Paid: the money is held and the option is on its way.
        paid_at = time.perf_counter()
        purchase_id = response.json()["id"]
        await eventually(lambda: "power_boost" in agent.active_features, what="on the car")
        on_car = time.perf_counter() - paid_at
        await eventually(
            lambda: _purchase(committed, purchase_id)["state"] == "active",
            what="the purchase active",
        )
        elapsed = time.perf_counter() - paid_at
        read = await asyncio.to_thread(client.get, f"/api/v1/purchases/{purchase_id}")
    assert on_car < 1.0, f"{on_car * 1000:.0f} ms from payment to the car running it"
    assert elapsed < 1.0, f"{elapsed * 1000:.0f} ms from payment to active and captured"
    assert "power_boost" in agent.active_features
    body = read.json()
    assert (body["state"], body["payment_state"]) == ("active", "captured")
    assert body["invoice_number"] is not None
    assert body["lines"][0]["entitlement_state"] == "active"


async def test_a_car_that_refuses_the_purchase_gets_it_refunded(
    committed: CommittedDatabase,
    shop_settings: Settings,
    mqtt_broker: LocalBroker,
    signing: SigningMaterial,
    worker: Worker,
    payment_sandbox: PaymentSandbox,
    online: list[VehicleAgent],
    tmp_path: Path,
) -> None:
    from caas.ota import service as ota
    from tests.vehicles.support import rogue_material

    car, offer_id = _delivered_car(committed, shop_settings)
    agent = await _start(car, mqtt_broker, signing, online)
    await eventually(lambda: "driver_assist" in agent.active_features, what="the plan applied")

    token = payment_sandbox.token(CARD_SUCCEEDS)
    # The platform signs this purchase with a key the car's pinned root never certified.
    ota.use_signing_material(rogue_material(tmp_path / "rogue"))
    try:
        with _client(shop_settings, committed, car) as client:
            response = client.post(
                f"/api/v1/vehicles/{car.vin}/purchases",
                json={"items": [{"offer_id": offer_id}], "payment_method": token},
                headers={"Idempotency-Key": "mqtt-purchase-0002"},
            )
    finally:
        ota.use_signing_material(signing)
    assert response.status_code == 201, response.text
    purchase_id = response.json()["id"]
    refunded = await eventually(
        lambda: (found := _purchase(committed, purchase_id))["state"] == "refunded" and found,
        what="the purchase refunded",
    )
    assert refunded["failure_code"] == "car_rejected"

    def payment_state(session: Session) -> str | None:
        from caas.billing.models import Payment

        purchase = session.get_one(Purchase, purchase_id)
        return session.scalar(select(Payment.state).where(Payment.id == purchase.payment_id))

    await eventually(lambda: committed.run(payment_state) == "voided", what="the hold released")
    assert "power_boost" not in agent.active_features
