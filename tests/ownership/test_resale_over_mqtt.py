"""A resale end to end over the network: the worker (relay, MQTT bridge) publishes the new
manifest to a simulated car on a real broker; the car then refuses the seller's phone and,
once the buyer pairs theirs, opens for it."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.app import create_app
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.ota.keys import SigningMaterial
from caas.sales.models import Sale
from caas.worker import Worker
from caas_sim.vehicle.agent import VehicleAgent
from tests.billing.conftest import PaymentSandbox
from tests.mqtt import mqtt_broker
from tests.ownership.conftest import buyer, log_in, pair
from tests.store.test_purchases_over_mqtt import (
    _delivered_car,
    _start,
    anyio_backend,
    online,
    shop_settings,
    worker,
)
from tests.vehicles.support import CommittedDatabase, committed, eventually, signing
from tests.vehicles.test_phone_keys import webcrypto_signature

__all__ = [
    "anyio_backend",
    "committed",
    "mqtt_broker",
    "online",
    "shop_settings",
    "signing",
    "worker",
]

pytestmark = pytest.mark.anyio


def _unlock(agent: VehicleAgent, phone: ec.EllipticCurvePrivateKey, key_id: str) -> str | None:
    nonce = agent.challenge().nonce
    signature = base64.b64encode(webcrypto_signature(phone, nonce.encode("ascii"))).decode()
    answer = agent.operate("unlock", key_id, signature, nonce=nonce)
    return None if answer.granted else answer.reason


async def test_after_a_resale_the_car_refuses_the_sellers_phone_and_opens_for_the_buyers(
    committed: CommittedDatabase,
    shop_settings: Settings,
    mqtt_broker: LocalBroker,
    signing: SigningMaterial,
    worker: Worker,
    payment_sandbox: PaymentSandbox,
    online: list[VehicleAgent],
) -> None:
    car, _ = _delivered_car(committed, shop_settings)
    buyer_email = f"buyer-{uuid.uuid4().hex[:8]}@example.es"

    def handed_over_and_a_buyer(session: Session) -> None:
        session.get_one(Sale, car.sale_id).state = "delivered"
        buyer(session, datetime.now(UTC), email=buyer_email)

    committed.run(handed_over_and_a_buyer)
    agent = await _start(car, mqtt_broker, signing, online)
    await eventually(lambda: "driver_assist" in agent.active_features, what="the plan applied")

    app = create_app(settings=shop_settings, sessions=committed.sessions)
    with TestClient(app) as client:
        log_in(client, car.customer_email)
        sellers_phone, sellers_key = pair(client, car.vin, "Ana's phone", "mqtt-pair-ana")
        await eventually(lambda: agent.phone_keys, what="the seller's phone on the car")
        assert _unlock(agent, sellers_phone, sellers_key) is None

        opened = client.post(
            f"/api/v1/vehicles/{car.vin}/transfer", headers={"Idempotency-Key": "mqtt-sell-1"}
        )
        code = opened.json()["code"]
        log_in(client, buyer_email)
        received = client.post(
            "/api/v1/transfers/receive",
            json={"vin": car.vin, "code": code},
            headers={"Idempotency-Key": "mqtt-receive-1"},
        )
        assert received.status_code == 200, received.text
        await eventually(lambda: not agent.phone_keys, what="the car forgetting the seller")
        assert _unlock(agent, sellers_phone, sellers_key) == "not_paired"
        assert "driver_assist" in agent.active_features  # the plan stays with the car

        buyers_phone, buyers_key = pair(client, car.vin, "Bruno's phone", "mqtt-pair-bruno")
        await eventually(lambda: agent.phone_keys, what="the buyer's phone on the car")
        assert _unlock(agent, buyers_phone, buyers_key) is None
        assert _unlock(agent, sellers_phone, sellers_key) == "key_not_authorised"
