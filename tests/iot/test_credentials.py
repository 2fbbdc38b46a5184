"""A car's broker credentials: issued at production, delivered to the broker by the worker."""

from __future__ import annotations

import aiomqtt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.errors import Conflict
from caas.core.net import free_port
from caas.core.outbox import OutboxMessage, Relay, pending
from caas.core.settings import Settings
from caas.iot import service
from caas.iot.broker import DynsecAdmin
from caas.iot.jobs import handlers
from caas.iot.local import LocalBroker
from caas.iot.models import BrokerCredential
from caas.iot.passwords import verify_password
from caas.worker import build_relay
from tests.iot.conftest import fresh_vin
from tests.mqtt import car_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def wired(settings: Settings, mqtt_broker: LocalBroker) -> Settings:
    """The test settings, pointing at the session's broker as the worker would see it."""
    return settings.model_copy(
        update={
            "mqtt_url": mqtt_broker.service_url,
            "mqtt_admin_username": mqtt_broker.admin_username,
            "mqtt_admin_password": mqtt_broker.admin_password,
        }
    )


async def _connects(broker: LocalBroker, vin: str, password: str) -> bool:
    try:
        async with car_client(broker, vin, password):
            return True
    except aiomqtt.MqttCodeError:
        return False


def _credential(db: Session, vin: str) -> BrokerCredential:
    return db.scalars(select(BrokerCredential).where(BrokerCredential.vin == vin)).one()


def test_provisioning_keeps_only_a_hash_and_queues_the_account_by_vin(
    db: Session, clock: FixedClock, settings: Settings
) -> None:
    vin = fresh_vin()
    password = service.provision_car(db, vin=vin, now=clock.now(), settings=settings)

    credential = _credential(db, vin)
    assert verify_password(credential.password_hash, password)
    stored = " ".join(str(value) for value in vars(credential).values())
    assert password not in stored
    assert credential.pending_secret is not None
    assert service.unseal(settings, credential.pending_secret) == password
    [message] = [m for m in pending(db, service.PROVISION_TOPIC) if m.payload["vin"] == vin]
    assert message.payload == {"vin": vin}
    assert message.dedupe_key == f"iot.provision:{vin}"


def test_a_car_gets_credentials_once(db: Session, clock: FixedClock, settings: Settings) -> None:
    vin = fresh_vin()
    service.provision_car(db, vin=vin, now=clock.now(), settings=settings)
    with pytest.raises(Conflict):
        service.provision_car(db, vin=vin, now=clock.now(), settings=settings)


async def test_the_worker_gives_the_broker_the_password_and_wipes_it(
    db: Session,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    wired: Settings,
    mqtt_broker: LocalBroker,
) -> None:
    vin = fresh_vin()
    password = service.provision_car(db, vin=vin, now=clock.now(), settings=wired)
    db.commit()
    assert not await _connects(mqtt_broker, vin, password)

    build_relay(wired, sessions, clock).run_once()

    assert await _connects(mqtt_broker, vin, password)
    db.expire_all()
    credential = _credential(db, vin)
    assert credential.pending_secret is None
    assert credential.delivered_at == clock.now()
    assert pending(db, service.PROVISION_TOPIC) == []


async def test_a_rotated_password_replaces_the_old_one_on_the_broker(
    db: Session,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    settings: Settings,
    mqtt_broker: LocalBroker,
) -> None:
    relay = Relay(
        sessions=sessions, clock=clock, handlers=handlers(settings, clock, mqtt_broker.admin())
    )
    vin = fresh_vin()
    old = service.provision_car(db, vin=vin, now=clock.now(), settings=settings)
    db.commit()
    relay.run_once()
    new = service.rotate_car_password(db, vin=vin, now=clock.now(), settings=settings)
    db.commit()
    relay.run_once()

    assert not await _connects(mqtt_broker, vin, old)
    assert await _connects(mqtt_broker, vin, new)
    assert _credential(db, vin).generation == 2


def test_while_the_broker_is_down_the_password_waits_encrypted(
    db: Session, sessions: sessionmaker[Session], clock: FixedClock, settings: Settings
) -> None:
    unreachable = DynsecAdmin("127.0.0.1", free_port(), "caas-admin", "secret", timeout=1)
    relay = Relay(sessions=sessions, clock=clock, handlers=handlers(settings, clock, unreachable))
    vin = fresh_vin()
    service.provision_car(db, vin=vin, now=clock.now(), settings=settings)
    db.commit()

    relay.run_once()

    db.expire_all()
    message = db.scalars(
        select(OutboxMessage).where(OutboxMessage.dedupe_key == f"iot.provision:{vin}")
    ).one()
    assert message.done_at is None
    assert message.attempts == 1
    assert "unreachable" in (message.last_error or "")
    assert _credential(db, vin).pending_secret is not None


def test_a_password_sealed_under_another_secret_key_cannot_be_read(settings: Settings) -> None:
    sealed = service.seal(settings, "the car's password")
    other = settings.model_copy(update={"secret_key": "another-secret-key"})
    with pytest.raises(service.UnreadableSecret):
        service.unseal(other, sealed)
