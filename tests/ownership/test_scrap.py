"""A scrapped car leaves the network for good: both brokers refuse its login, nothing more is
published to it (its retained manifest is cleared), and its twin is archived, read-only,
with its whole history for the operator."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.errors import Conflict
from caas.core.history import Actor
from caas.core.outbox import Relay
from caas.core.settings import Settings
from caas.iot import jobs as iot_jobs
from caas.iot.local import LocalBroker
from caas.iot.models import BrokerCredential
from caas.notifications.models import Notification
from caas.ota import jobs as ota_jobs
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial
from caas.ota.models import ConfigurationVersion
from caas.store.models import Entitlement
from caas.vehicles.models import Vehicle
from tests.mqtt import car_client, embedded_mqtt_broker, mosquitto_broker
from tests.ownership.conftest import log_in
from tests.store.conftest import Owner, delivered_owner
from tests.store.engine import engine_keys, signing

__all__ = ["embedded_mqtt_broker", "engine_keys", "mosquitto_broker", "signing"]


class RecordingPublisher:
    """What the worker's bridge would publish on the cars' desired topics."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish_desired(self, vin: str, payload: bytes) -> None:
        self.published.append((vin, payload))


@pytest.fixture(params=["mosquitto_broker", "embedded_mqtt_broker"])
def broker(request: pytest.FixtureRequest) -> LocalBroker:
    found: LocalBroker = request.getfixturevalue(request.param)
    return found


def connects(broker: LocalBroker, vin: str, password: str) -> bool:
    async def attempt() -> bool:
        try:
            async with car_client(broker, vin, password):
                return True
        except aiomqtt.MqttError:
            return False

    return asyncio.run(attempt())


def test_a_scrapped_car_is_refused_by_the_broker_gets_no_manifest_and_its_twin_is_archived(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    broker: LocalBroker,
    signing: SigningMaterial,
) -> None:
    owner: Owner = delivered_owner(db, settings, clock)
    vin, password = owner.vehicle.vin, owner.car.password
    publisher = RecordingPublisher()
    relay = Relay(
        sessions=sessions,
        clock=clock,
        handlers={
            **iot_jobs.handlers(settings, clock, admin=broker.admin()),
            **ota_jobs.handlers(settings, clock, publisher),
        },
    )
    relay.run_once(limit=100)  # the broker gets the car's password; its manifests go out
    assert connects(broker, vin, password)
    published_before = len(publisher.published)
    assert published_before >= 1

    operator = log_in(app_client, "operator@caas.example")
    body = {"reason": "Written off after a fire", "certificate_number": "CD-2026-0001"}
    scrapped = operator.post(
        f"/api/v1/vehicles/{vin}/scrap", json=body, headers={"Idempotency-Key": "scrap-0001"}
    )
    assert scrapped.status_code == 201, scrapped.text
    assert scrapped.json()["certificate_number"] == "CD-2026-0001"
    again = operator.post(
        f"/api/v1/vehicles/{vin}/scrap", json=body, headers={"Idempotency-Key": "scrap-0002"}
    )
    assert again.status_code == 409 and again.json()["code"] == "vehicle.archived"

    relay.run_once(limit=100)
    db.expire_all()
    # The broker refuses the car's login; the platform keeps no way to let it back in.
    assert not connects(broker, vin, password)
    credential = db.scalars(select(BrokerCredential).where(BrokerCredential.vin == vin)).one()
    assert credential.revoked_at == clock.now() and credential.pending_secret is None
    # Its retained manifest is cleared (an empty retained message) and nothing else goes out.
    assert publisher.published[published_before:] == [(vin, b"")]
    vehicle = db.get_one(Vehicle, owner.vehicle.id)
    with pytest.raises(Conflict) as refused:
        ota.request_configuration(
            db, vehicle, reason="late change", actor=Actor.system("test"), now=clock.now()
        )
    assert refused.value.code == "vehicle.archived"
    waiting = db.scalars(
        select(ConfigurationVersion).where(
            ConfigurationVersion.vehicle_id == vehicle.id,
            ConfigurationVersion.state.in_(("pending", "deferred")),
        )
    ).all()
    assert waiting == []
    counting = db.scalars(
        select(Entitlement).where(
            Entitlement.vehicle_id == vehicle.id, Entitlement.state.in_(("active", "delivering"))
        )
    ).all()
    assert counting == []  # no sweep ever signs for it again
    store = log_in(app_client, owner.user.email).get(f"/api/v1/vehicles/{vin}/store").json()
    assert store["features"] and all(
        "not_delivered" in [r["reason"] for r in feature["refusals"]]
        for feature in store["features"]
    )  # nothing can be bought for it

    # The twin is archived and still whole for the operator; the owner was told.
    twin = operator.get(f"/api/v1/vehicles/{vin}/twin").json()
    assert (twin["state"], twin["archived_at"] is not None) == ("archived", True)
    events = [event["event"] for event in twin["history"]]
    assert events[0] == "car.born" and "car.scrapped" in events
    told = db.scalars(select(Notification.kind).where(Notification.user_id == owner.user.id)).all()
    assert "ownership.car_scrapped" in told


def test_only_an_operator_or_the_selling_dealership_scraps_a_car(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock, signing: object
) -> None:
    owner = delivered_owner(db, settings, clock)
    vin = owner.vehicle.vin
    body = {"reason": "Total loss", "certificate_number": "CD-1"}
    customer = log_in(app_client, owner.user.email)
    assert (
        customer.post(
            f"/api/v1/vehicles/{vin}/scrap", json=body, headers={"Idempotency-Key": "scrap-c-01"}
        ).status_code
        == 403
    )
    other_dealer = log_in(app_client, "sales.lyon@caas.example")
    assert (
        other_dealer.post(
            f"/api/v1/vehicles/{vin}/scrap", json=body, headers={"Idempotency-Key": "scrap-d-01"}
        ).status_code
        == 404
    )
    selling_dealer = log_in(app_client, "sales.madrid@caas.example")
    assert (
        selling_dealer.post(
            f"/api/v1/vehicles/{vin}/scrap", json=body, headers={"Idempotency-Key": "scrap-d-02"}
        ).status_code
        == 201
    )
