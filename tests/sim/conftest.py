"""The simulated cars under test: the maker's keys, manifests signed as the platform signs them,
cars on a real broker, and the test playing the platform with the service account."""

from __future__ import annotations

import asyncio
import base64
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import aiomqtt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel

from caas.core.clock import FixedClock
from caas.iot.local import LocalBroker
from caas.protocol import mqtt
from caas.protocol.manifest import issue_certificate, sign_manifest
from caas.protocol.mqtt import FeatureState, ManifestBody, PhoneKey, SigningCertificate
from caas.protocol.vin import make_vin
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from tests.mqtt import V5, embedded_mqtt_broker, mqtt_broker, service_client

__all__ = ["embedded_mqtt_broker", "mqtt_broker"]

ModelT = TypeVar("ModelT", bound=BaseModel)
WAIT = 5.0  # seconds: a bound for real network effects, never a schedule

_serials = itertools.count(secrets.randbelow(900_000))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def fresh_vin() -> str:
    """A valid VIN no other test uses (the broker lives for the whole run)."""
    return make_vin("VCA", "CRRS1", "T", "M", next(_serials))


@dataclass
class Maker:
    """The maker's keys: the root pinned in the cars, the certified online signing key."""

    root: Ed25519PrivateKey
    signing: Ed25519PrivateKey
    certificate: SigningCertificate

    @classmethod
    def create(cls, now: datetime) -> Maker:
        root, signing = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        certificate = issue_certificate(
            root,
            signing.public_key(),
            key_id="test-signing",
            not_before=now - timedelta(days=30),
            not_after=now + timedelta(days=400),
        )
        return cls(root, signing, certificate)

    def body(
        self,
        vin: str,
        version: int,
        now: datetime,
        *,
        features: Iterable[FeatureState] = (),
        phone_keys: Iterable[PhoneKey] = (),
        messages: Iterable[str] = (),
    ) -> ManifestBody:
        return ManifestBody(
            vin=vin,
            version=version,
            issued_at=now,
            features=list(features),
            phone_keys=list(phone_keys),
            messages=list(messages),
        )

    def sign(self, body: ManifestBody) -> bytes:
        signed = sign_manifest(body, signing_key=self.signing, certificate=self.certificate)
        return mqtt.encode(signed)


@pytest.fixture
def maker(clock: FixedClock) -> Maker:
    return Maker.create(clock.now())


def feature(
    code: str,
    *,
    affects_driving: bool = False,
    until: datetime | None = None,
    since: datetime | None = None,
    **parameters: Any,
) -> FeatureState:
    return FeatureState(
        code=code,
        enabled=True,
        valid_from=since,
        valid_until=until,
        parameters=parameters,
        affects_driving=affects_driving,
    )


@dataclass
class Phone:
    """A phone app's key pair, made as WebCrypto makes it (ECDSA P-256)."""

    key_id: str
    label: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def key(self) -> PhoneKey:
        spki = self.private_key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        return PhoneKey(
            key_id=self.key_id,
            algorithm="ECDSA-P256-SHA256",
            public_key=base64.b64encode(spki).decode(),
            label=self.label,
        )

    def sign(self, nonce: str) -> str:
        """WebCrypto's ECDSA signature: r || s, 32 bytes each, here in base64."""
        der = self.private_key.sign(nonce.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()


class Platform:
    """The test playing the platform: publishes manifests, reads what the cars send."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[aiomqtt.Message] = []
        self._arrived = asyncio.Event()

    async def _read(self) -> None:
        async for message in self.client.messages:
            self.messages.append(message)
            self._arrived.set()

    async def publish(self, vin: str, payload: bytes, *, retain: bool = True) -> None:
        await self.client.publish(mqtt.desired_topic(vin), payload, qos=1, retain=retain)

    def received(self, model: type[ModelT], channel: mqtt.Channel, vin: str) -> list[ModelT]:
        """Every `model` the car `vin` sent on `channel` so far, oldest first."""
        topic = mqtt.topic(vin, channel)
        return [
            mqtt.decode(model, bytes(m.payload))  # type: ignore[arg-type]
            for m in self.messages
            if m.topic.value == topic and m.payload
        ]

    async def wait_for(
        self,
        model: type[ModelT],
        channel: mqtt.Channel,
        vin: str,
        condition: Callable[[ModelT], bool] = lambda _: True,
        *,
        timeout: float = WAIT,
    ) -> ModelT:
        """The first `model` from `vin` on `channel` meeting `condition`, waiting for it."""
        async with asyncio.timeout(timeout):
            while True:
                self._arrived.clear()
                found = [m for m in self.received(model, channel, vin) if condition(m)]
                if found:
                    return found[0]
                await self._arrived.wait()


@asynccontextmanager
async def playing_platform(broker: LocalBroker) -> AsyncIterator[Platform]:
    async with service_client(broker) as client:
        for topic_filter in (mqtt.REPORTED_FILTER, mqtt.STATUS_FILTER, mqtt.EVENTS_FILTER):
            await client.subscribe(topic_filter, qos=1)
        await client.subscribe(mqtt.TELEMETRY_FILTER, qos=0)
        platform = Platform(client)
        reader = asyncio.create_task(platform._read())
        try:
            yield platform
        finally:
            reader.cancel()
            await asyncio.wait([reader])


@pytest.fixture
async def platform(mqtt_broker: LocalBroker) -> AsyncIterator[Platform]:
    async with playing_platform(mqtt_broker) as playing:
        yield playing


def new_identity(maker: Maker, vin: str | None = None, password: str = "unused") -> CarIdentity:
    """What the factory gives a car: its VIN, broker password, own key, the maker's root."""
    return CarIdentity(
        vin=vin or fresh_vin(),
        password=password,
        private_key=Ed25519PrivateKey.generate(),
        root_public_key=maker.root.public_key(),
    )


def new_car(
    broker: LocalBroker,
    maker: Maker,
    clock: FixedClock,
    *,
    protocol: aiomqtt.ProtocolVersion | None = V5,
    **details: Any,
) -> VehicleAgent:
    """A car built by the factory: an account on the broker, the maker's root pinned."""
    vin = fresh_vin()
    identity = new_identity(maker, vin, broker.add_car(vin))
    endpoint = BrokerEndpoint(broker.host, broker.port, protocol)
    return VehicleAgent(identity, endpoint, now=clock.now, **details)


@asynccontextmanager
async def running(agent: VehicleAgent) -> AsyncIterator[VehicleAgent]:
    """The car connected (and subscribed) for the block, stopped cleanly after it."""
    agent.start()
    try:
        await agent.wait_online(WAIT)
        yield agent
    finally:
        await agent.stop()
