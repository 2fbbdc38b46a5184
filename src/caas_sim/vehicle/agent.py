"""One simulated car: its MQTT session, the configuration it applied, its own clock, its key.

The car is a real MQTT client with its own credentials (username and client id: its VIN). It
connects with a retained last will saying it is offline, says it is online (retained), and
subscribes to its own desired topic, where the platform keeps its newest signed manifest.

**Configuration.** A manifest is applied only when `caas.protocol.manifest.verify_manifest`
accepts it: signed through the root key pinned at production, for this VIN, newer than what the
car runs. Anything else is reported `rejected` with the reason code and changes nothing. A
verified manifest is applied whole, or not yet: when it would change a feature that affects
driving (power, assistance, autopilot, traction) while the car is not parked, the car reports
`deferred` (`DEFERRED_REASON`) and applies it when it is parked (`park`).

**Time.** The car's own clock (`now`, injectable) decides when a feature's window starts and
ends; `tick` switches features on and off by it, with or without a connection (a window end
that affects driving also waits for the car to be parked). Every change is reported as
`applied` for the same version with the features now on, when the car is connected again.

**What leaves the car.** Reports and usage events of metered features (QoS 1) wait in a local
outbox until the broker acknowledges them, so they survive a lost connection (the platform drops
duplicates by sequence number). Telemetry (QoS 0) is sent only while connected. A feature is
metered when its parameters say so: `{"metered": "km" | "hour" | "activation"}`.

**Software.** A manifest may order a software release (`SoftwareOrder`). The car checks the
release's signature through the manifest's certificate (so the pinned root), downloads the
image over HTTP from the platform (`platform_url`), checks its size and SHA-256, installs it
and reboots into it (drops its connection and comes back saying the new version), or rolls back
to the old one when the install fails (`install_failure_rate`: the simulator's knob for tests
and the demo). Each step is a `SoftwareStep` on the events topic, through the outbox. A
release is tried once: a refused or rolled back one is not tried again by this car.

**Wear.** The car's fluids, tyres, brake pads, 12 V battery and service counters
(`caas_sim.vehicle.wear.Consumables`) go down as it is driven (`drive`, or `cruise` at a
`pace` faster than its clock) and ages (`tick`), and travel in every telemetry sample under
their VSS names; `serviced` is the workshop's work on the car.

**The key.** The phone is the key: `challenge` gives a one-time nonce, `operate` unlocks or
starts the car only for a signature of that nonce by one of the phones in the applied manifest
(ECDSA P-256 from WebCrypto, or Ed25519). Nothing about it needs the network.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import random
import secrets
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, NamedTuple
from urllib.parse import urljoin, urlparse

import aiomqtt
import httpx
import structlog
from aiomqtt.exceptions import MqttConnectError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.reasoncodes import ReasonCode

from caas.protocol import mqtt
from caas.protocol.manifest import ManifestRejected, release_signed, verify_manifest
from caas.protocol.mqtt import (
    FeatureState,
    ManifestBody,
    PhoneKey,
    Reported,
    SignedManifest,
    SoftwareOrder,
    SoftwareStep,
    SoftwareStepName,
    Status,
    Telemetry,
    UsageEvent,
)
from caas_sim.vehicle.wear import Consumables, Need, WearRates

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
KeyAction = Literal["unlock", "start"]
KeyRefusal = Literal["not_paired", "key_not_authorised", "no_challenge", "bad_signature"]
MeteringUnit = Literal["activation", "hour", "km"]

DEFERRED_REASON: Final = mqtt.DEFERRED_UNTIL_PARKED
METERED_PARAMETER: Final = "metered"
CHALLENGE_LIFETIME = timedelta(seconds=60)
MAX_OPEN_CHALLENGES = 8
OUTBOX_LIMIT = 10_000  # the oldest messages go first when a car stays offline for very long
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 15.0
KEEPALIVE_SECONDS = 30
MQTT_TIMEOUT_SECONDS = 10.0
PROBE_TIMEOUT_SECONDS = 2.0
_MAX_REPORTED_VERSION = 2**53 - 1
# A CONNACK refusing the protocol version: 0x01 in MQTT 3.1.1, 0x84 in MQTT 5.
_UNSUPPORTED_PROTOCOL = (1, 0x84)
_NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # Nagle would add ~40 ms per message
DOWNLOAD_TIMEOUT_SECONDS = 30.0


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where the cars connect, in which MQTT version (None: find out, 5 before 3.1.1), and
    whether over TLS, trusting the CA certificates in `ca_file` (None: the system's)."""

    host: str
    port: int = 1883
    protocol: aiomqtt.ProtocolVersion | None = None
    tls: bool = False
    ca_file: Path | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        protocol: aiomqtt.ProtocolVersion | None = None,
        ca_file: Path | None = None,
    ) -> BrokerEndpoint:
        """`mqtt://host:port`, or `mqtts://host:port` for TLS (ports 1883 and 8883 by
        default); credentials in the URL are ignored (each car has its own)."""
        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
            raise ValueError(f"a broker URL looks like mqtt(s)://host:port, not {url!r}")
        tls = parsed.scheme == "mqtts"
        try:
            port = parsed.port or (8883 if tls else 1883)
        except ValueError:
            raise ValueError(f"the broker URL {url!r} has an invalid port") from None
        return cls(parsed.hostname, port, protocol, tls, ca_file if tls else None)

    def tls_context(self) -> ssl.SSLContext | None:
        """None for plain MQTT; for TLS, one that checks the broker's certificate and name."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


@dataclass(frozen=True)
class CarIdentity:
    """What the factory gave the car at production; it never changes."""

    vin: str
    password: str
    private_key: Ed25519PrivateKey
    root_public_key: Ed25519PublicKey  # pinned: every manifest must be certified by it

    def __repr__(self) -> str:
        return f"CarIdentity(vin={self.vin!r})"


@dataclass(frozen=True)
class FeatureOnCar:
    """One feature as the car runs it now: on or off, and whether it waits to be parked."""

    code: str
    on: bool
    state: FeatureState
    waiting_for_park: bool


@dataclass(frozen=True)
class KeyChallenge:
    nonce: str  # the phone signs its ASCII bytes
    expires_at: datetime


@dataclass(frozen=True)
class KeyAnswer:
    """The car's answer to a phone: `granted`, or refused with a reason."""

    action: KeyAction
    granted: bool
    reason: KeyRefusal | None = None
    key_id: str | None = None


class _Outgoing(NamedTuple):
    topic: str
    payload: bytes


async def detect_protocol(
    host: str,
    port: int,
    *,
    username: str,
    password: str,
    timeout: float = PROBE_TIMEOUT_SECONDS,
    tls_context: ssl.SSLContext | None = None,
) -> aiomqtt.ProtocolVersion:
    """MQTT 5 when the broker answers a version 5 CONNECT (even with a refusal of the login),
    else 3.1.1 (the embedded amqtt broker does not answer version 5 at all).

    OSError when nothing listens at `host:port` (the answer would mean nothing yet).
    """
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    try:
        async with aiomqtt.Client(
            host,
            port,
            username=username,
            password=password,
            identifier=username,
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=timeout,
            tls_context=tls_context,
        ):
            return aiomqtt.ProtocolVersion.V5
    except MqttConnectError as refusal:  # a CONNACK came back
        code = refusal.rc.value if isinstance(refusal.rc, ReasonCode) else refusal.rc
        if code in _UNSUPPORTED_PROTOCOL:
            return aiomqtt.ProtocolVersion.V311
        return aiomqtt.ProtocolVersion.V5
    except aiomqtt.MqttError:
        return aiomqtt.ProtocolVersion.V311


def _same_effect(one: FeatureState | None, other: FeatureState | None) -> bool:
    """Whether the car runs the same way under both states (off, or on with equal settings)."""
    if one is None or other is None:
        return one is other
    return one.parameters == other.parameters


def _drives(*states: FeatureState | None) -> bool:
    return any(state.affects_driving for state in states if state is not None)


def _signature_bytes(text: str) -> bytes | None:
    """A signature in standard or URL-safe base64 (what phones send), padding optional."""
    cleaned = text.strip()
    padded = cleaned + "=" * (-len(cleaned) % 4)
    for alphabet in (None, b"-_"):
        try:
            return base64.b64decode(padded, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


class VehicleAgent:
    """One car: connect it with `start`, drive it, let time pass with `tick`, ask it for a key."""

    def __init__(
        self,
        identity: CarIdentity,
        broker: BrokerEndpoint,
        *,
        hardware: Iterable[str] = (),
        software_version: str = "1.0.0",
        odometer_km: float = 0.0,
        model: str | None = None,
        now: Clock = system_clock,
        first_sequence: int | None = None,
        platform_url: str | None = None,
        install_failure_rate: float = 0.0,
        install_seconds: float = 0.0,
        wear_rates: WearRates | None = None,
        diesel: bool = True,
    ) -> None:
        self.identity = identity
        self.broker = broker
        self.model = model
        self.hardware = tuple(hardware)
        self.software_version = software_version
        self.odometer_km = odometer_km
        self.speed_kmh = 0.0
        self.parked = True
        self.locked = True
        self.started = False
        self._now = now
        # A real car keeps its counters across restarts; the simulator keeps no state on disk,
        # so it starts them from its clock (milliseconds): a restarted car never reuses one.
        start = first_sequence if first_sequence is not None else int(now().timestamp() * 1000)
        self._telemetry_seq = start
        self._event_seq = start
        # The connection counter: the online status and the last will of one connection carry
        # it, so the platform can tell the will of this connection from a stale one.
        self._connection = start

        self._applied: ManifestBody | None = None
        self._applied_payload: bytes | None = None
        self._pending: ManifestBody | None = None
        self._pending_payload: bytes | None = None
        self._running: dict[str, FeatureState] = {}
        self._metered_hours: dict[str, float] = {}
        self._last_tick = now()
        # What the car uses up as it is driven and ages (`caas_sim.vehicle.wear`); `cruise`
        # drives it by itself, `pace` times faster than its clock (a demo's months in minutes).
        self.wear_rates = wear_rates or WearRates()
        self.consumables = Consumables.new(self.wear_rates)
        self.diesel = diesel
        self.cruise_kmh = 0.0
        self.pace = 1.0
        self._challenges: dict[str, datetime] = {}
        self.last_report: Reported | None = None

        # Software updates: where the platform's HTTP API is, the simulator's knobs, and what
        # became of the latest update (`update_step`, `update_error`).
        self.platform_url = platform_url
        self.install_failure_rate = install_failure_rate
        self.install_seconds = install_seconds
        self.update_version: str | None = None
        self.update_step: SoftwareStepName | None = None
        self.update_error: str | None = None
        self._tried_releases: set[int] = set()
        self._update_task: asyncio.Task[None] | None = None

        self._outbox: deque[_Outgoing] = deque(maxlen=OUTBOX_LIMIT)
        self._wake = asyncio.Event()
        self._network = asyncio.Event()
        self._network.set()
        self._online = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._link_dropped = False

    def __repr__(self) -> str:
        return f"VehicleAgent(vin={self.vin!r}, version={self.version}, online={self.online})"

    # --- what the car runs ------------------------------------------------------------------

    def now(self) -> datetime:
        """The car's own clock."""
        return self._now()

    @property
    def vin(self) -> str:
        return self.identity.vin

    @property
    def version(self) -> int:
        """The version of the configuration applied; 0 before the first."""
        return self._applied.version if self._applied is not None else 0

    @property
    def pending_version(self) -> int | None:
        """A verified configuration waiting for the car to be parked, if any."""
        return self._pending.version if self._pending is not None else None

    @property
    def applied(self) -> ManifestBody | None:
        return self._applied

    @property
    def active_features(self) -> list[str]:
        """Codes of the features on in the car, sorted."""
        return sorted(self._running)

    @property
    def phone_keys(self) -> list[PhoneKey]:
        """The phones the applied configuration authorises (none before pairing)."""
        return list(self._applied.phone_keys) if self._applied is not None else []

    @property
    def messages(self) -> list[str]:
        return list(self._applied.messages) if self._applied is not None else []

    @property
    def online(self) -> bool:
        return self._online.is_set()

    @property
    def outbox_size(self) -> int:
        """Reports and usage events not yet acknowledged by the broker."""
        return len(self._outbox)

    def features(self) -> list[FeatureOnCar]:
        """Every feature the applied configuration lists (and any still on), as the car runs it."""
        target = self._target(self._applied, self._now())
        listed = {state.code: state for state in self._applied.features} if self._applied else {}
        shown = []
        for code in sorted(listed.keys() | self._running.keys()):
            running = self._running.get(code)
            shown.append(
                FeatureOnCar(
                    code=code,
                    on=running is not None,
                    state=running or listed[code],
                    waiting_for_park=not self.parked
                    and _drives(running, target.get(code))
                    and not _same_effect(running, target.get(code)),
                )
            )
        return shown

    # --- the connection -----------------------------------------------------------------

    def start(self) -> None:
        """Start the car's connection (it reconnects by itself until `stop`)."""
        if self._task is None or self._task.done():
            self._stopped = False
            self._task = asyncio.create_task(self._run(), name=f"vehicle-{self.vin}")

    async def stop(self) -> None:
        """Say offline (retained), disconnect cleanly and stop reconnecting."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopped = True
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    mqtt.status_topic(self.vin),
                    mqtt.encode(self._status(online=False)),
                    qos=mqtt.QOS_STATUS,
                    retain=mqtt.RETAIN_STATUS,
                    timeout=2,
                )
        task.cancel()
        await asyncio.wait([task])
        update, self._update_task = self._update_task, None
        if update is not None and not update.done():
            update.cancel()
            await asyncio.wait([update])

    async def wait_online(self, timeout: float = 5.0) -> None:
        """Until the car is connected and subscribed (TimeoutError after `timeout` seconds)."""
        async with asyncio.timeout(timeout):
            await self._online.wait()

    def lose_network(self) -> None:
        """The car loses its network: the connection drops without a goodbye (the broker sends
        the car's last will) and the car stays offline until `restore_network`."""
        self._network.clear()
        client = self._client
        if client is None:
            return
        self._link_dropped = True
        self._went_offline()  # at once: paho notices the dead socket a moment later
        # aiomqtt keeps paho's socket to itself; shutting it down is a dropped link.
        link = client._client.socket()
        if isinstance(link, socket.socket):
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)

    def restore_network(self) -> None:
        self._network.set()

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        # `stop` cancels this task; the flag also ends the loop when Python 3.11's wait_for
        # (inside aiomqtt) swallows that cancellation.
        while not self._stopped:
            await self._network.wait()
            try:
                if self.broker.protocol is None:
                    protocol = await detect_protocol(
                        self.broker.host,
                        self.broker.port,
                        username=self.vin,
                        password=self.identity.password,
                        tls_context=self.broker.tls_context(),
                    )
                    self.broker = replace(self.broker, protocol=protocol)
                async with self._new_client() as client:
                    delay = RECONNECT_FIRST_SECONDS
                    await self._session(client)
            except* (aiomqtt.MqttError, OSError) as errors:
                log.info("vehicle.disconnected", vin=self.vin, error=str(errors.exceptions[0]))
            finally:
                self._went_offline()
            if self._link_dropped:  # the network came back: connect at once
                self._link_dropped = False
            elif self._network.is_set() and not self._stopped:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _went_offline(self) -> None:
        self._client = None
        self._online.clear()

    def _new_client(self) -> aiomqtt.Client:
        protocol = self.broker.protocol or aiomqtt.ProtocolVersion.V5
        self._connection += 1
        will = aiomqtt.Will(
            mqtt.status_topic(self.vin),
            mqtt.encode(self._status(online=False)),
            qos=mqtt.QOS_STATUS,
            retain=mqtt.RETAIN_STATUS,
        )
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.vin,
            password=self.identity.password,
            tls_context=self.broker.tls_context(),
            identifier=self.vin,
            protocol=protocol,
            will=will,
            # The retained manifest is the whole state: nothing to keep between sessions.
            clean_session=True if protocol != aiomqtt.ProtocolVersion.V5 else None,
            keepalive=KEEPALIVE_SECONDS,
            timeout=MQTT_TIMEOUT_SECONDS,
            socket_options=[_NO_DELAY],
        )

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.publish(
            mqtt.status_topic(self.vin),
            mqtt.encode(self._status(online=True)),
            qos=mqtt.QOS_STATUS,
            retain=mqtt.RETAIN_STATUS,
        )
        await client.subscribe(mqtt.desired_topic(self.vin), qos=mqtt.QOS_DESIRED)
        self._client = client
        self._online.set()
        log.debug("vehicle.online", vin=self.vin)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._deliver_outbox(client))
            tasks.create_task(self._receive_manifests(client))

    async def _receive_manifests(self, client: aiomqtt.Client) -> None:
        desired = mqtt.desired_topic(self.vin)
        async for message in client.messages:
            if message.topic.value == desired and isinstance(message.payload, bytes | bytearray):
                self.receive(bytes(message.payload))

    async def _deliver_outbox(self, client: aiomqtt.Client) -> None:
        """Send what waits in the outbox, oldest first; each leaves it once acknowledged."""
        while True:
            # Not on a link the car knows is dead (`lose_network`): it waits for the next one.
            while self._outbox and self._client is client:
                item = self._outbox[0]
                await client.publish(item.topic, item.payload, qos=mqtt.QOS_AT_LEAST_ONCE)
                if self._outbox and self._outbox[0] is item:
                    self._outbox.popleft()
            self._wake.clear()
            await self._wake.wait()

    def _send(self, topic: str, payload: bytes) -> None:
        self._outbox.append(_Outgoing(topic, payload))
        self._wake.set()

    def _status(self, *, online: bool) -> Status:
        return Status(
            vin=self.vin,
            online=online,
            at=self._now(),
            session=self._connection,
            software_version=self.software_version,
        )

    # --- configuration ------------------------------------------------------------------

    def receive(self, payload: bytes) -> Reported | None:
        """Handle what arrived on the desired topic; returns the report queued for the platform
        (None for an empty payload: the platform cleared its retained manifest)."""
        if not payload:
            return None
        now = self._now()
        if payload == self._applied_payload:  # delivered again (retained, on reconnect)
            return self._report("applied", self.version, now)
        if self._pending is not None and payload == self._pending_payload:
            return self._report("deferred", self._pending.version, now, reason=DEFERRED_REASON)
        accepted = max(self.version, self.pending_version or 0)
        try:
            body = verify_manifest(
                payload,
                root_public_key=self.identity.root_public_key,
                vin=self.vin,
                current_version=accepted,
                now=now,
            )
        except ManifestRejected as rejection:
            claimed = rejection.version
            version = (
                claimed if claimed is not None and 0 <= claimed <= _MAX_REPORTED_VERSION else 0
            )
            log.info("vehicle.manifest_rejected", vin=self.vin, reason=rejection.reason)
            return self._report("rejected", version, now, reason=rejection.reason)
        if self._waits_for_park(body, now):
            self._pending, self._pending_payload = body, payload
            return self._report("deferred", body.version, now, reason=DEFERRED_REASON)
        return self._apply(body, payload, now)

    def _target(self, body: ManifestBody | None, now: datetime) -> dict[str, FeatureState]:
        """The features `body` wants on at `now`."""
        if body is None:
            return {}
        return {state.code: state for state in body.features if state.active_at(now)}

    def _waits_for_park(self, body: ManifestBody, now: datetime) -> bool:
        """Whether `body` changes how the car drives now, so it must wait until it is parked.

        A driving feature that already waits to be switched (its window ended while moving)
        does not hold back a manifest that leaves it as it is.
        """
        if self.parked:
            return False
        wanted, current = self._target(body, now), self._target(self._applied, now)
        for code in wanted.keys() | current.keys() | self._running.keys():
            new, old, running = wanted.get(code), current.get(code), self._running.get(code)
            if _drives(new, old, running) and not (
                _same_effect(new, running) or _same_effect(new, old)
            ):
                return True
        return False

    def _apply(self, body: ManifestBody, payload: bytes, now: datetime) -> Reported:
        self._applied, self._applied_payload = body, payload
        self._pending = self._pending_payload = None
        self._switch_features(now)
        log.info("vehicle.manifest_applied", vin=self.vin, version=body.version)
        report = self._report("applied", body.version, now)
        if body.software is not None:
            self._consider_update(body.software, payload)
        return report

    # --- software updates ---------------------------------------------------------------

    def _consider_update(self, order: SoftwareOrder, payload: bytes) -> None:
        """Start the ordered update unless the car runs that version, tried that release
        already, or is busy with another."""
        if order.version == self.software_version or order.release_id in self._tried_releases:
            return
        if self._update_task is not None and not self._update_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the car is not running (unit tests of manifests)
            return
        # Already verified with the manifest: its certificate vouches for the release.
        certificate = mqtt.decode(SignedManifest, payload).certificate
        self._tried_releases.add(order.release_id)
        self._update_task = loop.create_task(
            self._update(order, certificate), name=f"update-{self.vin}-{order.release_id}"
        )

    async def _update(self, order: SoftwareOrder, certificate: mqtt.SigningCertificate) -> None:
        self.update_version, self.update_error = order.version, None
        self._step(order, "downloading")
        if not release_signed(order, certificate):
            self._step(order, "failed", error="bad_signature")
            return
        if self.model is not None and self.model not in order.models:
            self._step(order, "failed", error="wrong_model")
            return
        image = await self._download(order)
        if image is None:
            self._step(order, "failed", error="download_failed")
            return
        if len(image) != order.size:
            self._step(order, "failed", error="bad_size")
            return
        if hashlib.sha256(image).hexdigest() != order.sha256:
            self._step(order, "failed", error="bad_hash")
            return
        self._step(order, "installing")
        if self.install_seconds:
            await asyncio.sleep(self.install_seconds)
        if random.random() < self.install_failure_rate:
            self._step(order, "rolled_back", error="install_failed")
            log.info("vehicle.update_rolled_back", vin=self.vin, version=order.version)
            return
        self.software_version = order.version
        self._step(order, "installed")
        log.info("vehicle.update_installed", vin=self.vin, version=order.version)
        self.reboot()

    async def _download(self, order: SoftwareOrder) -> bytes | None:
        if self.platform_url is None and not urlparse(order.url).scheme:
            return None
        url = urljoin(self.platform_url or "", order.url)
        try:
            async with httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT_SECONDS) as client:
                response = await client.get(url)
        except httpx.HTTPError as error:
            log.info("vehicle.download_failed", vin=self.vin, error=str(error))
            return None
        if response.status_code != 200:
            log.info("vehicle.download_refused", vin=self.vin, status=response.status_code)
            return None
        return response.content

    def _step(
        self, order: SoftwareOrder, step: SoftwareStepName, *, error: str | None = None
    ) -> None:
        self.update_step, self.update_error = step, error
        self._event_seq += 1
        message = SoftwareStep(
            vin=self.vin,
            seq=self._event_seq,
            at=self._now(),
            release_id=order.release_id,
            version=order.version,
            step=step,
            software_version=self.software_version,
            error=error,
        )
        self._send(mqtt.events_topic(self.vin), mqtt.encode(message))

    def reboot(self) -> None:
        """Restart into the software installed: the connection drops and comes back at once,
        saying the new version (what waits in the outbox goes out on the new connection)."""
        if self._client is None:
            return
        self.lose_network()
        self.restore_network()

    def _switch_features(self, now: datetime) -> bool:
        """Bring the running features to what the applied configuration wants at `now`, except
        features that affect driving while the car is not parked. Whether any changed."""
        target = self._target(self._applied, now)
        changed = False
        for code in sorted(target.keys() | self._running.keys()):
            wanted, running = target.get(code), self._running.get(code)
            if _same_effect(wanted, running):
                if wanted is not None:
                    self._running[code] = wanted  # a new end date, same behaviour
                continue
            if not self.parked and _drives(wanted, running):
                continue
            changed = True
            if wanted is None:
                del self._running[code]
                self._flush_hours(code)
            else:
                self._running[code] = wanted
                if running is None and self._metering(wanted) == "activation":
                    self.record_usage(code, "activation", 1)
        return changed

    def _report(
        self,
        status: Literal["applied", "rejected", "deferred"],
        version: int,
        now: datetime,
        *,
        reason: str | None = None,
    ) -> Reported:
        report = Reported(
            vin=self.vin,
            version=version,
            status=status,
            reason=reason,
            at=now,
            active_features=self.active_features,
        )
        self.last_report = report
        self._send(mqtt.reported_topic(self.vin), mqtt.encode(report))
        return report

    # --- driving and time ---------------------------------------------------------------

    def tick(self) -> bool:
        """Let the car's clock act: switch features whose window started or ended, count metered
        hours, forget expired challenges. Whether a feature was switched (then reported)."""
        now = self._now()
        elapsed_hours = max((now - self._last_tick).total_seconds(), 0.0) / 3600
        self._last_tick = now
        self.consumables.age(elapsed_hours * 3600 * self.pace, self.wear_rates)
        if self.cruise_kmh > 0:
            self.drive(self.cruise_kmh, self.cruise_kmh * elapsed_hours * self.pace)
        for code, state in self._running.items():
            if self._metering(state) == "hour":
                self._metered_hours[code] = self._metered_hours.get(code, 0.0) + elapsed_hours
                if self._metered_hours[code] >= 1:
                    self._flush_hours(code)
        self._challenges = {n: until for n, until in self._challenges.items() if until > now}
        return self._settle(now)

    def drive(self, speed_kmh: float, km: float = 0.0) -> None:
        """The car moves at `speed_kmh` (0: stopped in traffic, still not parked) and has
        covered `km` more since the last call."""
        if speed_kmh < 0 or km < 0:
            raise ValueError("speed and distance cannot be negative")
        self.speed_kmh = speed_kmh
        self.parked = False
        self.odometer_km += km
        self.consumables.drive(km, self.wear_rates)
        if km > 0:
            for code, state in self._running.items():
                if self._metering(state) == "km":
                    self.record_usage(code, "km", km)

    def cruise(self, speed_kmh: float, *, pace: float = 1.0) -> None:
        """Drive by itself at `speed_kmh` from now on, its life (distance, wear, ageing) going
        `pace` times faster than its clock: the simulator's way to make months pass in a
        demo. 0 km/h parks the car."""
        if speed_kmh < 0 or pace <= 0:
            raise ValueError("speed cannot be negative and pace must be positive")
        self.tick()  # what passed until now counts at the old speed and pace
        self.cruise_kmh, self.pace = speed_kmh, pace
        if speed_kmh == 0:
            self.park()
        else:
            self.drive(speed_kmh)

    def serviced(self, needs: Iterable[Need]) -> None:
        """A workshop did `needs` on the car (filled, replaced, serviced): its sensors read new
        levels from the next telemetry on."""
        self.consumables.serviced(set(needs), self.wear_rates)
        log.info("vehicle.serviced", vin=self.vin, needs=sorted(needs))

    def park(self) -> None:
        """The car is parked: a configuration waiting for it is applied, and so are window
        ends and starts of features that affect driving."""
        self.speed_kmh = self.cruise_kmh = 0.0
        self.parked = True
        now = self._now()
        if self._pending is not None and self._pending_payload is not None:
            self._apply(self._pending, self._pending_payload, now)
        self._settle(now)

    def _settle(self, now: datetime) -> bool:
        changed = self._switch_features(now)
        if changed and self._applied is not None:
            self._report("applied", self._applied.version, now)
        return changed

    # --- what the car tells the platform ------------------------------------------------

    async def send_telemetry(self, *, extra: dict[str, float] | None = None) -> bool:
        """Send one telemetry sample (QoS 0) if connected; whether it was sent."""
        client = self._client
        if client is None:
            return False
        self._telemetry_seq += 1
        sample = Telemetry(
            vin=self.vin,
            seq=self._telemetry_seq,
            at=self._now(),
            odometer_km=round(self.odometer_km, 1),
            software_version=self.software_version,
            speed_kmh=self.speed_kmh,
            parked=self.parked,
            extra=self.consumables.readings(diesel=self.diesel) | (extra or {}),
        )
        try:
            await client.publish(
                mqtt.telemetry_topic(self.vin), mqtt.encode(sample), qos=mqtt.QOS_TELEMETRY
            )
        except aiomqtt.MqttError:
            return False
        return True

    def record_usage(self, feature: str, unit: MeteringUnit, quantity: float) -> UsageEvent:
        """Count use of a metered feature; the event waits in the outbox until acknowledged."""
        self._event_seq += 1
        event = UsageEvent(
            vin=self.vin,
            seq=self._event_seq,
            at=self._now(),
            feature=feature,
            unit=unit,
            quantity=quantity,
        )
        self._send(mqtt.events_topic(self.vin), mqtt.encode(event))
        return event

    @staticmethod
    def _metering(state: FeatureState) -> str | None:
        unit = state.parameters.get(METERED_PARAMETER)
        return unit if isinstance(unit, str) else None

    def _flush_hours(self, code: str) -> None:
        hours = self._metered_hours.pop(code, 0.0)
        if hours > 0:
            self.record_usage(code, "hour", round(hours, 6))

    # --- the phone is the key -----------------------------------------------------------

    def challenge(self) -> KeyChallenge:
        """A one-time nonce for a phone to sign (valid `CHALLENGE_LIFETIME` by the car's clock)."""
        now = self._now()
        nonce = secrets.token_urlsafe(32)
        self._challenges = {n: until for n, until in self._challenges.items() if until > now}
        while len(self._challenges) >= MAX_OPEN_CHALLENGES:
            del self._challenges[next(iter(self._challenges))]
        expires_at = now + CHALLENGE_LIFETIME
        self._challenges[nonce] = expires_at
        return KeyChallenge(nonce, expires_at)

    def operate(
        self, action: KeyAction, key_id: str, signature_b64: str, *, nonce: str | None = None
    ) -> KeyAnswer:
        """Unlock or start the car for a phone of the applied configuration that signed an open
        challenge (`nonce`, or any open one); the challenge is used up when it works."""
        keys: Sequence[PhoneKey] = self.phone_keys
        if not keys:
            return KeyAnswer(action, granted=False, reason="not_paired", key_id=key_id)
        key = next((candidate for candidate in keys if candidate.key_id == key_id), None)
        if key is None:
            return KeyAnswer(action, granted=False, reason="key_not_authorised", key_id=key_id)
        now = self._now()
        open_nonces = [n for n, until in self._challenges.items() if until > now]
        if nonce is not None:
            open_nonces = [n for n in open_nonces if n == nonce]
        if not open_nonces:
            return KeyAnswer(action, granted=False, reason="no_challenge", key_id=key_id)
        signature = _signature_bytes(signature_b64)
        signed = next(
            (
                n
                for n in open_nonces
                if signature is not None and key.verifies(n.encode("ascii"), signature)
            ),
            None,
        )
        if signed is None:
            return KeyAnswer(action, granted=False, reason="bad_signature", key_id=key_id)
        del self._challenges[signed]
        self.locked = False
        if action == "start":
            self.started = True
        log.info("vehicle.key_used", vin=self.vin, action=action, key_id=key_id)
        return KeyAnswer(action, granted=True, key_id=key_id)
