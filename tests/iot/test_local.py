"""Our own broker for the demo: restarted on the same directory, it keeps cars and the platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from caas.core.settings import Settings
from caas.iot.embedded import EmbeddedAdmin
from caas.iot.local import BrokerKind, LocalBroker, broker_admin, start_local_broker
from caas.iot.mosquitto import available
from caas.protocol import mqtt
from tests.iot.conftest import fresh_vin
from tests.mqtt import car_client, messages_within, service_client

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["mosquitto", "embedded"])
def kind(request: pytest.FixtureRequest) -> BrokerKind:
    if request.param == "mosquitto" and not available():
        pytest.skip("mosquitto is not installed")
    kind: BrokerKind = request.param
    return kind


async def _service_works(broker: LocalBroker, vin: str, password: str) -> bool:
    async with service_client(broker) as platform, car_client(broker, vin, password) as car:
        await platform.subscribe(mqtt.shared(mqtt.REPORTED_FILTER), qos=1)
        await car.publish(mqtt.reported_topic(vin), b"applied", qos=1)
        received = await messages_within(platform, 2, until_topic=mqtt.reported_topic(vin))
    return [m.payload for m in received] == [b"applied"]


async def test_a_restarted_local_broker_keeps_its_cars_and_renews_the_platforms_account(
    tmp_path: Path, kind: BrokerKind
) -> None:
    vin = fresh_vin()
    with start_local_broker(tmp_path, kind=kind) as broker:
        password = broker.add_car(vin)
        assert await _service_works(broker, vin, password)
        first_service_password = broker.service_password

    with start_local_broker(tmp_path, kind=kind) as broker:
        assert broker.service_password != first_service_password
        assert await _service_works(broker, vin, password)


def test_the_worker_administers_an_embedded_broker_of_its_own_process_in_place(
    tmp_path: Path,
) -> None:
    with start_local_broker(tmp_path, kind="embedded") as broker:
        admin = broker_admin(Settings(env="test", mqtt_url=broker.service_url))
        assert isinstance(admin, EmbeddedAdmin)
        assert admin.store is broker.admin().store  # type: ignore[attr-defined]
