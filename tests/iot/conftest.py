"""Every access test runs against Mosquitto (MQTT 3.1.1 and 5) and the embedded amqtt broker."""

from __future__ import annotations

import itertools
import secrets

import aiomqtt
import pytest

from caas.iot.local import LocalBroker
from caas.protocol.vin import make_vin
from tests.mqtt import V5, V311, embedded_mqtt_broker, mosquitto_broker, mqtt_broker

__all__ = ["embedded_mqtt_broker", "mosquitto_broker", "mqtt_broker"]

_serials = itertools.count(secrets.randbelow(900_000))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(
    params=[("mosquitto", V311), ("mosquitto", V5), ("embedded", V311)],
    ids=["mosquitto-3.1.1", "mosquitto-5", "embedded-3.1.1"],
)
def wire(request: pytest.FixtureRequest) -> tuple[LocalBroker, aiomqtt.ProtocolVersion]:
    """A broker and the MQTT version its clients speak (amqtt speaks only 3.1.1)."""
    kind, protocol = request.param
    fixture = "mosquitto_broker" if kind == "mosquitto" else "embedded_mqtt_broker"
    return request.getfixturevalue(fixture), protocol


def fresh_vin() -> str:
    """A valid VIN no other test uses (the brokers live for the whole run)."""
    return make_vin("VCA", "AURA0", "T", "M", next(_serials))
