"""The MQTT contract between the platform and its cars: topics, QoS, and the JSON payloads.

Every car has five topics under `caas/v1/vehicles/{vin}/`; the VIN in a topic is always a valid
ISO 3779 VIN (`caas.protocol.vin`), so a topic names exactly one car:

| topic                 | direction       | QoS | retained | payload          |
|-----------------------|-----------------|-----|----------|------------------|
| `config/desired`      | platform -> car | 1   | yes      | `SignedManifest` |
| `config/reported`     | car -> platform | 1   | no       | `Reported`       |
| `telemetry`           | car -> platform | 0   | no       | `Telemetry`      |
| `events`              | car -> platform | 1   | no       | `EventMessage`   |
| `status`              | car -> platform | 1   | yes, and the car's last will | `Status` |

**Software updates** ride on the same topics. The platform tells a car of its update inside
its signed manifest (`ManifestBody.software`, a `SoftwareOrder`: version, HTTP URL of the image
for that car, size, SHA-256 and the release's own signature by the manifest signing key), so an
update is as authentic, as retained and as ordered as every other change of configuration; a
car that is offline gets it when it comes back. The car downloads the image over HTTP (the URL
carries a token only this car was given), checks its size, hash and signature (through the
manifest's certificate, thus the pinned root), installs it, reboots (disconnects and reconnects
saying its new `software_version`) or rolls back, and reports each step (`SoftwareStep`) on its
`events` topic with QoS 1 beside its usage events (`EventMessage`).

A car may publish only to its own `reported`, `telemetry`, `events` and `status` topics and
subscribe only to its own `desired` topic (`car_may_publish`, `car_may_subscribe`). The
platform's workers subscribe to every car's topic of a kind through the shared subscription
group `caas` (`shared(REPORTED_FILTER)`), so replicas split the stream. Everything here works
over MQTT 3.1.1 (protocol level 4): retained messages, the last will and QoS 1 are all 3.1.1.

Payloads are UTF-8 JSON (`encode`, `decode`); every model refuses unknown fields, so a payload
either means exactly one thing or is dropped as `MalformedPayload`. Datetimes carry a zone and
are normalised to UTC.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, NamedTuple, TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from caas.protocol import vin as vin_rules

TOPIC_PREFIX = "caas/v1/vehicles"
SHARED_GROUP = "caas"

# The last part of each of a car's topics (after `caas/v1/vehicles/{vin}/`).
Channel = Literal["config/desired", "config/reported", "telemetry", "events", "status"]
DESIRED: Final = "config/desired"
REPORTED: Final = "config/reported"
TELEMETRY: Final = "telemetry"
EVENTS: Final = "events"
STATUS: Final = "status"
CHANNELS: tuple[Channel, ...] = (DESIRED, REPORTED, TELEMETRY, EVENTS, STATUS)
CAR_PUBLISHES: tuple[Channel, ...] = (REPORTED, TELEMETRY, EVENTS, STATUS)
CAR_SUBSCRIBES: tuple[Channel, ...] = (DESIRED,)

QOS_AT_MOST_ONCE = 0
QOS_AT_LEAST_ONCE = 1
QOS_DESIRED = QOS_AT_LEAST_ONCE
QOS_REPORTED = QOS_AT_LEAST_ONCE
QOS_TELEMETRY = QOS_AT_MOST_ONCE  # a lost sample is replaced by the next one
QOS_EVENTS = QOS_AT_LEAST_ONCE  # duplicates are dropped by (VIN, seq)
QOS_STATUS = QOS_AT_LEAST_ONCE
# Retained: a car that connects gets its newest manifest at once; the platform reads every car's
# last status when it (re)subscribes.
# The reason a car gives when it defers a change to how it drives until it is parked.
DEFERRED_UNTIL_PARKED = "waiting_to_be_parked"

RETAIN_DESIRED = True
RETAIN_STATUS = True

# Every car's topic of one kind, for the platform's subscriptions.
DESIRED_FILTER = f"{TOPIC_PREFIX}/+/{DESIRED}"
REPORTED_FILTER = f"{TOPIC_PREFIX}/+/{REPORTED}"
TELEMETRY_FILTER = f"{TOPIC_PREFIX}/+/{TELEMETRY}"
EVENTS_FILTER = f"{TOPIC_PREFIX}/+/{EVENTS}"
STATUS_FILTER = f"{TOPIC_PREFIX}/+/{STATUS}"

ED25519_PUBLIC_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
# WebCrypto signs ECDSA P-256 as r || s, 32 bytes each (IEEE P1363), not DER.
ECDSA_P256_SIGNATURE_BYTES = 64


# --- topics ---------------------------------------------------------------------------------


class VehicleTopic(NamedTuple):
    vin: str
    channel: Channel


def topic(vin: str, channel: Channel) -> str:
    """The topic of `channel` for the car `vin` (InvalidVin, a ValueError, if it is not one)."""
    return f"{TOPIC_PREFIX}/{vin_rules.validate(vin)}/{channel}"


def desired_topic(vin: str) -> str:
    """Platform -> car, retained: the car's newest signed manifest."""
    return topic(vin, DESIRED)


def reported_topic(vin: str) -> str:
    """Car -> platform: a manifest version applied, rejected or deferred."""
    return topic(vin, REPORTED)


def telemetry_topic(vin: str) -> str:
    """Car -> platform, QoS 0: odometer, software version, speed, ..."""
    return topic(vin, TELEMETRY)


def events_topic(vin: str) -> str:
    """Car -> platform: usage of metered features and software update steps, sequence-numbered."""
    return topic(vin, EVENTS)


def status_topic(vin: str) -> str:
    """Car -> platform, retained and the car's last will: online or offline."""
    return topic(vin, STATUS)


def shared(topic_filter: str) -> str:
    """`topic_filter` as a shared subscription of the platform's group: replicas split it."""
    return f"$share/{SHARED_GROUP}/{topic_filter}"


def parse_topic(name: str) -> VehicleTopic:
    """The car and channel a topic belongs to; ValueError for any topic outside the contract."""
    prefix = f"{TOPIC_PREFIX}/"
    if not name.startswith(prefix):
        raise ValueError(f"not a vehicle topic (outside {TOPIC_PREFIX}/): {name!r}")
    vin, separator, channel = name[len(prefix) :].partition("/")
    if not separator or channel not in CHANNELS:
        raise ValueError(f"not a vehicle topic (unknown channel): {name!r}")
    try:
        vin_rules.validate(vin)
    except vin_rules.InvalidVin as error:
        raise ValueError(f"not a vehicle topic ({error}): {name!r}") from None
    return VehicleTopic(vin, channel)


def vin_of(name: str) -> str:
    """The VIN in a car's topic; ValueError for a foreign topic."""
    return parse_topic(name).vin


def car_may_publish(vin: str, name: str) -> bool:
    """Whether the car `vin` may publish to topic `name`: only its own car -> platform topics."""
    return any(name == topic(vin, channel) for channel in CAR_PUBLISHES)


def car_may_subscribe(vin: str, topic_filter: str) -> bool:
    """Whether the car `vin` may subscribe to `topic_filter`: only its own desired topic, exactly
    (no wildcards, no shared subscriptions)."""
    return any(topic_filter == topic(vin, channel) for channel in CAR_SUBSCRIBES)


# --- field types ----------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _canonical_base64(value: str, size: int, what: str) -> str:
    """`value` when it is the one standard base64 text (with padding) of `size` bytes."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != size:
        raise ValueError(f"{what} has {size} bytes, not {len(raw)}")
    if base64.b64encode(raw).decode() != value:  # one text per key: no unused bits set
        raise ValueError(f"{what} is not in standard base64")
    return value


def _ed25519_public_key(value: str) -> str:
    return _canonical_base64(value, ED25519_PUBLIC_KEY_BYTES, "an Ed25519 public key")


def _ed25519_signature(value: str) -> str:
    return _canonical_base64(value, ED25519_SIGNATURE_BYTES, "an Ed25519 signature")


Vin = Annotated[
    str,
    AfterValidator(vin_rules.validate),
    Field(description="The car's VIN (ISO 3779, check digit in position 9)",
          examples=["VCAAURA02TM000001"]),
]  # fmt: skip
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
Ed25519PublicKeyText = Annotated[str, AfterValidator(_ed25519_public_key)]
Ed25519SignatureText = Annotated[str, AfterValidator(_ed25519_signature)]
FeatureCode = Annotated[
    str,
    Field(
        min_length=1,
        max_length=40,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="The feature's code in the catalog",
        examples=["power_boost"],
    ),
]
SoftwareVersion = Annotated[
    str, Field(min_length=1, max_length=20, description="Software on the car", examples=["7.2.0"])
]
SequenceNumber = Annotated[
    int,
    Field(
        ge=0,
        le=2**63 - 1,
        description="Increases by one with every message of this kind from this car (per VIN); "
        "the platform drops a (VIN, seq) it already has",
        examples=[1042],
    ),
]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]


class Payload(BaseModel):
    """Base of every message on the wire: unknown fields, NaN and infinity are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --- platform -> car: the signed manifest ---------------------------------------------------


class FeatureState(Payload):
    """One feature as the car must run it: on or off, and when."""

    code: FeatureCode
    enabled: bool = Field(
        description="On inside its window; off (or outside the window) the car keeps it off"
    )
    valid_from: UtcDatetime | None = Field(
        default=None, description="From when it is on; none: from when the manifest is applied"
    )
    valid_until: UtcDatetime | None = Field(
        default=None,
        description="When the car switches it off by its own clock, even offline; none: for "
        "the car's life",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the feature (JSON values), as in the catalog",
        examples=[{"percent": 50}],
    )
    affects_driving: bool = Field(
        description="Changes how the car drives (power, assistance, autopilot, traction): the "
        "car switches it on or off only while parked and reports `deferred` meanwhile"
    )

    @model_validator(mode="after")
    def _window_in_order(self) -> FeatureState:
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self

    def active_at(self, moment: datetime) -> bool:
        """Whether the feature is on at `moment` by this state alone."""
        if not self.enabled:
            return False
        if self.valid_from is not None and moment < self.valid_from:
            return False
        return self.valid_until is None or moment < self.valid_until


class PhoneKey(Payload):
    """A phone authorised to start and unlock the car (the digital key)."""

    key_id: str = Field(
        min_length=1, max_length=64, description="Unique among the car's keys", examples=["pk-1"]
    )
    algorithm: Literal["ECDSA-P256-SHA256", "Ed25519"] = Field(
        description="`ECDSA-P256-SHA256` (WebCrypto in the phone app; signatures are r || s, "
        "64 bytes) or `Ed25519`"
    )
    public_key: str = Field(
        description="Base64: the SubjectPublicKeyInfo DER for ECDSA P-256, the raw 32 bytes "
        "for Ed25519"
    )
    label: str = Field(
        min_length=1, max_length=80, description="Shown to the owner", examples=["Lucía's phone"]
    )

    @model_validator(mode="after")
    def _key_fits_algorithm(self) -> PhoneKey:
        self._load()
        return self

    def _load(self) -> Ed25519PublicKey | ec.EllipticCurvePublicKey:
        if self.algorithm == "Ed25519":
            raw = base64.b64decode(_ed25519_public_key(self.public_key))
            return Ed25519PublicKey.from_public_bytes(raw)
        try:
            key = load_der_public_key(base64.b64decode(self.public_key, validate=True))
        except (binascii.Error, ValueError, UnsupportedAlgorithm):
            raise ValueError("public_key is not a base64 SubjectPublicKeyInfo DER") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ValueError("public_key is not an ECDSA P-256 key")
        return key

    def verifies(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's signature of `message` (a challenge from the car).

        ECDSA signatures are WebCrypto's raw r || s (64 bytes); Ed25519 its 64 bytes.
        """
        key = self._load()
        try:
            if isinstance(key, Ed25519PublicKey):
                key.verify(signature, message)
            else:
                if len(signature) != ECDSA_P256_SIGNATURE_BYTES:
                    return False
                half = ECDSA_P256_SIGNATURE_BYTES // 2
                der = encode_dss_signature(
                    int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
                )
                key.verify(der, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


Sha256Hex = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the image, 64 lowercase hex digits",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    ),
]


class SoftwareOrder(Payload):
    """A software release the car must install: where to fetch it and how to know it is genuine.

    `signature` is the manifest signing key's signature over the release's claims
    (`caas.protocol.manifest.release_claims`: version, sha256, size, models), so the image is
    vouched for by the same certificate (and the same pinned root) as the manifest.
    """

    release_id: int = Field(ge=1, description="The release's id on the platform", examples=[3])
    version: SoftwareVersion
    url: str = Field(
        min_length=1,
        max_length=500,
        description="Where to download the image: a path on the platform's HTTP address (or "
        "an absolute URL); it carries a token given to this car alone",
    )
    size: int = Field(ge=1, le=2**40, description="The image's size in bytes", examples=[1048576])
    sha256: Sha256Hex
    models: list[Annotated[str, Field(min_length=1, max_length=20)]] = Field(
        min_length=1,
        max_length=20,
        description="Platform codes it is built for",
        examples=[["AURA"]],
    )
    signature: Ed25519SignatureText = Field(
        description="The signing key's Ed25519 signature over the release's claims, base64"
    )


class ManifestBody(Payload):
    """The whole configuration of one car, as the maker signs it; the car applies all or none."""

    vin: Vin
    version: int = Field(
        ge=1,
        le=2**53 - 1,
        description="Strictly increasing per car: the car applies only a version newer than "
        "its own",
        examples=[7],
    )
    issued_at: UtcDatetime = Field(description="When the platform signed it (UTC)")
    features: list[FeatureState] = Field(
        max_length=200, description="Every feature's state; a feature not listed is off"
    )
    phone_keys: list[PhoneKey] = Field(
        max_length=20, description="The phones that may start and unlock the car; none: nobody"
    )
    messages: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list,
        max_length=20,
        description="Short texts for the car's screen",
        examples=[["Winter traction is on until 31 March."]],
    )
    software: SoftwareOrder | None = Field(
        default=None,
        description="A software release to install; none: keep the software the car runs",
    )

    @field_validator("features")
    @classmethod
    def _one_state_per_feature(cls, value: list[FeatureState]) -> list[FeatureState]:
        codes = [state.code for state in value]
        if len(set(codes)) != len(codes):
            raise ValueError("a feature is listed twice")
        return value

    @field_validator("phone_keys")
    @classmethod
    def _unique_key_ids(cls, value: list[PhoneKey]) -> list[PhoneKey]:
        ids = [key.key_id for key in value]
        if len(set(ids)) != len(ids):
            raise ValueError("a key_id is listed twice")
        return value


class SigningCertificate(Payload):
    """The root key's statement that an online signing key may sign manifests for a while.

    The root's public key is pinned in every car at production; the signing key can be
    rotated by issuing a new certificate, without touching the cars.
    """

    key_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Names the signing key (logs, rotation)",
        examples=["signing-2026-11-23-1a2b3c"],
    )
    public_key: Ed25519PublicKeyText = Field(
        description="The signing key's Ed25519 public key, raw 32 bytes in base64"
    )
    not_before: UtcDatetime = Field(description="Manifests are accepted from this moment on")
    not_after: UtcDatetime = Field(description="... and until this moment")
    signature: Ed25519SignatureText = Field(
        description="The root key's Ed25519 signature over the canonical encoding "
        "(`caas.protocol.manifest.canonical`) of this certificate without `signature`, base64"
    )

    @model_validator(mode="after")
    def _window_in_order(self) -> SigningCertificate:
        if self.not_after <= self.not_before:
            raise ValueError("not_after must be after not_before")
        return self


class SignedManifest(Payload):
    """What the platform publishes, retained, on a car's desired topic."""

    body: ManifestBody
    certificate: SigningCertificate
    signature: Ed25519SignatureText = Field(
        description="The certified signing key's Ed25519 signature over the canonical encoding "
        "of `body`, base64"
    )


# --- car -> platform ------------------------------------------------------------------------


class Reported(Payload):
    """The car's answer to a manifest."""

    vin: Vin
    version: int = Field(
        ge=0,
        description="The manifest's version; 0 when the manifest was too malformed to read one",
        examples=[7],
    )
    status: Literal["applied", "rejected", "deferred"] = Field(
        description="`applied` (all of it), `rejected` (none; see `reason`) or `deferred` "
        "(verified, waiting for the car to be parked)"
    )
    reason: str | None = Field(
        default=None,
        max_length=200,
        description="Why it was rejected (a `caas.protocol.manifest` reason code such as "
        "`stale_version`) or deferred (`waiting_to_be_parked`)",
        examples=["bad_signature"],
    )
    at: UtcDatetime = Field(description="By the car's clock")
    active_features: list[FeatureCode] = Field(
        default_factory=list, description="Codes of the features on in the car after this"
    )

    @model_validator(mode="after")
    def _rejection_has_reason(self) -> Reported:
        if self.status == "rejected" and not self.reason:
            raise ValueError("a rejection needs a reason")
        return self


class Telemetry(Payload):
    """The car's operational state, sent every few seconds while it is online."""

    vin: Vin
    seq: SequenceNumber
    at: UtcDatetime = Field(description="By the car's clock")
    odometer_km: float = Field(ge=0, examples=[12_345.6])
    software_version: SoftwareVersion
    speed_kmh: float = Field(ge=0, le=500, examples=[0])
    parked: bool
    battery_percent: float | None = Field(default=None, ge=0, le=100, examples=[81.5])
    location: tuple[Latitude, Longitude] | None = Field(
        default=None,
        description="(latitude, longitude) in degrees; stored only with the owner's consent",
        examples=[(40.4168, -3.7038)],
    )
    extra: dict[str, float] = Field(
        default_factory=dict,
        max_length=50,
        description="Further readings by name (tyre pressure, outside temperature, ...)",
        examples=[{"outside_temperature_c": 4.5}],
    )


class UsageEvent(Payload):
    """Use of a metered feature, counted by the car."""

    vin: Vin
    seq: SequenceNumber
    at: UtcDatetime = Field(description="By the car's clock")
    feature: FeatureCode
    unit: Literal["activation", "hour", "km"]
    quantity: float = Field(ge=0, examples=[1])


SoftwareStepName = Literal["downloading", "installing", "installed", "failed", "rolled_back"]


class SoftwareStep(Payload):
    """A step of the car's software update, on its events topic (QoS 1, kept until
    acknowledged): `downloading`, `installing`, then `installed` (after the reboot, running the
    new version), `failed` (refused before installing: download, size, hash or signature) or
    `rolled_back` (the install failed; the old version runs again)."""

    vin: Vin
    seq: SequenceNumber
    at: UtcDatetime = Field(description="By the car's clock")
    release_id: int = Field(ge=1, description="The release of the `SoftwareOrder`")
    version: SoftwareVersion
    step: SoftwareStepName
    software_version: SoftwareVersion = Field(description="What the car runs after this step")
    error: str | None = Field(
        default=None,
        max_length=200,
        description="Why it failed or rolled back: `download_failed`, `bad_size`, `bad_hash`, "
        "`bad_signature`, `wrong_model`, `install_failed`",
        examples=["bad_hash"],
    )

    @model_validator(mode="after")
    def _failure_has_error(self) -> SoftwareStep:
        if self.step in ("failed", "rolled_back") and not self.error:
            raise ValueError("a failed or rolled back step needs an error")
        return self


# What a car's events topic carries: usage of metered features and software update steps.
EventMessage = UsageEvent | SoftwareStep


class Status(Payload):
    """Online when the car connects; offline as its last will (or when it disconnects cleanly).

    The last will is written when the car connects, so it carries an older `at` than the
    `online` that follows it: the platform orders a car's statuses by `session` first, and
    within one session `offline` comes after `online` (`status_order`).
    """

    vin: Vin
    online: bool
    at: UtcDatetime = Field(
        description="By the car's clock; for the last will, the moment it connected"
    )
    session: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="The car's connection counter: increases with every connection; the "
        "`online` status and the last will of one connection carry the same number. Without "
        "it the platform orders statuses by `at` alone",
        examples=[1763900000001],
    )
    software_version: SoftwareVersion | None = None


def status_order(
    session: int | None, online: bool, at: datetime, *, than: tuple[int | None, bool, datetime]
) -> bool:
    """Whether a status (`session`, `online`, `at`) is newer than `than`, the one held.

    Within a connection (same `session`) `offline` is newer than `online` whatever their
    times (the will is written at connect time); a later connection beats an earlier one
    (a stale will delivered after the car came back changes nothing). Statuses without a
    session compare by time.
    """
    held_session, held_online, held_at = than
    if session is None or held_session is None:
        return at > held_at
    return (session, not online, at) > (held_session, not held_online, held_at)


# --- encoding -------------------------------------------------------------------------------

PayloadT = TypeVar("PayloadT", bound=BaseModel)


class MalformedPayload(ValueError):
    """A payload that is not the JSON of the model expected on its topic."""


def encode(model: BaseModel) -> bytes:
    """The payload bytes of `model` (UTF-8 JSON)."""
    return model.model_dump_json().encode()


def decode_event(payload: bytes | str) -> EventMessage:
    """The usage event or software step in `payload` (told apart by their fields), or
    MalformedPayload."""
    try:
        data = json.loads(payload)
    except ValueError:
        raise MalformedPayload("event: not JSON") from None
    model: type[UsageEvent | SoftwareStep] = (
        SoftwareStep if isinstance(data, dict) and "step" in data else UsageEvent
    )
    return decode(model, payload)


def decode(model_cls: type[PayloadT], payload: bytes | str) -> PayloadT:
    """The `model_cls` in `payload`, or MalformedPayload saying the first thing wrong."""
    try:
        return model_cls.model_validate_json(payload)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise MalformedPayload(f"{model_cls.__name__}: {where}: {first['msg']}{more}") from None
