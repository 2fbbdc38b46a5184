"""MQTT brokers for tests: started once per test session, on a free port, in a temporary directory.

Import the fixtures you need into your test module (or conftest):

    from tests.mqtt import mqtt_broker  # noqa: F401  (pytest finds fixtures by name)

- `mqtt_broker`: a private Mosquitto when it is installed (as in CI), else the embedded amqtt
  broker. A `caas.iot.local.LocalBroker`: `host`, `port`, `admin_username`, `admin_password`,
  `service_username`/`service_password`/`service_url` (the platform's account),
  `add_car(vin, password=None) -> password`, `admin()` (a `BrokerAdmin`).
- `mosquitto_broker`: always Mosquitto (the test is skipped when it is not installed).
- `embedded_mqtt_broker`: always the embedded amqtt broker (MQTT 3.1.1 only).

However many modules import them, each broker starts once per process and stops when pytest
ends. `client(...)`, `car_client(...)` and `service_client(...)` make real aiomqtt clients;
`messages_within(...)` collects what a client receives in a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import uuid

import aiomqtt
import pytest

from caas.iot.local import BrokerKind, LocalBroker, start_local_broker
from caas.iot.mosquitto import available as mosquitto_available

V311 = aiomqtt.ProtocolVersion.V311
V5 = aiomqtt.ProtocolVersion.V5

_brokers: dict[str, LocalBroker] = {}


def _shared_broker(
    name: str, kind: BrokerKind | None, request: pytest.FixtureRequest
) -> LocalBroker:
    if name not in _brokers:
        factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        broker = start_local_broker(factory.mktemp(f"mqtt-{name}"), kind=kind)
        _brokers[name] = broker

        def stop() -> None:
            _brokers.pop(name, None)
            broker.stop()

        request.config.add_cleanup(stop)
    return _brokers[name]


@pytest.fixture(scope="session")
def mqtt_broker(request: pytest.FixtureRequest) -> LocalBroker:
    """Mosquitto when installed, else the embedded broker; the platform's account is set up."""
    return _shared_broker("default", None, request)


@pytest.fixture(scope="session")
def mosquitto_broker(request: pytest.FixtureRequest) -> LocalBroker:
    if not mosquitto_available():
        pytest.skip("mosquitto (with its dynamic security plugin) is not installed")
    return _shared_broker("mosquitto", "mosquitto", request)


@pytest.fixture(scope="session")
def embedded_mqtt_broker(request: pytest.FixtureRequest) -> LocalBroker:
    return _shared_broker("embedded", "embedded", request)


def client(
    broker: LocalBroker,
    username: str | None,
    password: str | None,
    *,
    identifier: str | None = None,
    protocol: aiomqtt.ProtocolVersion = V311,
    will: aiomqtt.Will | None = None,
) -> aiomqtt.Client:
    """A real MQTT client of `broker` (not yet connected: use it with `async with`)."""
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=username,
        password=password,
        identifier=identifier or f"test-{uuid.uuid4().hex[:12]}",
        protocol=protocol,
        will=will,
        timeout=5,
    )


def car_client(
    broker: LocalBroker, vin: str, password: str, *, protocol: aiomqtt.ProtocolVersion = V311
) -> aiomqtt.Client:
    """The car `vin` as it connects: username and client id are its VIN."""
    return client(broker, vin, password, identifier=vin, protocol=protocol)


def service_client(
    broker: LocalBroker, *, protocol: aiomqtt.ProtocolVersion = V311
) -> aiomqtt.Client:
    """The platform's service account."""
    return client(broker, broker.service_username, broker.service_password, protocol=protocol)


async def messages_within(
    mqtt_client: aiomqtt.Client, seconds: float, *, until_topic: str | None = None
) -> list[aiomqtt.Message]:
    """What `mqtt_client` receives within `seconds` (or until a message on `until_topic`)."""
    received: list[aiomqtt.Message] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for message in mqtt_client.messages:
                received.append(message)
                if until_topic is not None and message.topic.matches(until_topic):
                    break
    return received


def connect_and_vanish(
    broker: LocalBroker,
    *,
    username: str,
    password: str,
    identifier: str,
    will_topic: str,
    will_payload: bytes,
) -> int:
    """Connect over MQTT 3.1.1 with a retained last will, then drop the TCP connection without
    DISCONNECT, so the broker sends the will. Returns the CONNACK's return code (0: accepted)."""

    def text(value: str | bytes) -> bytes:
        raw = value.encode() if isinstance(value, str) else value
        return struct.pack("!H", len(raw)) + raw

    # username, password, will retain, will QoS 1, will flag, clean session; keep alive 60 s
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02
    variable = text("MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
    body = variable + b"".join(
        text(part) for part in (identifier, will_topic, will_payload, username, password)
    )
    length, encoded = len(body), b""
    while True:
        digit, length = length % 128, length // 128
        encoded += bytes([digit | (0x80 if length else 0)])
        if not length:
            break
    with socket.create_connection((broker.host, broker.port), timeout=5) as connection:
        connection.sendall(b"\x10" + encoded + body)
        connack = connection.recv(4)
        # Close with a reset: an abnormal end, as when a car loses its network.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return connack[3] if len(connack) == 4 else -1
