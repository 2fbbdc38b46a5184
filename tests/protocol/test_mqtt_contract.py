"""The MQTT contract: topic names, who may use which topic, and every payload on the wire."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel

from caas.protocol import mqtt
from caas.protocol.manifest import issue_certificate, public_key_b64, sign_manifest
from caas.protocol.mqtt import (
    FeatureState,
    MalformedPayload,
    ManifestBody,
    PhoneKey,
    Reported,
    SignedManifest,
    SigningCertificate,
    Status,
    Telemetry,
    UsageEvent,
    decode,
    encode,
    vin_of,
)
from caas.protocol.vin import make_vin

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
VIN = make_vin("VCA", "AURA0", "T", "M", 1)
OTHER_VIN = make_vin("VCA", "AURA0", "T", "M", 2)
BASE = f"caas/v1/vehicles/{VIN}"


# --- topics ---------------------------------------------------------------------------------


def test_each_car_has_five_topics_under_the_prefix() -> None:
    assert mqtt.TOPIC_PREFIX == "caas/v1/vehicles"
    assert mqtt.desired_topic(VIN) == f"{BASE}/config/desired"
    assert mqtt.reported_topic(VIN) == f"{BASE}/config/reported"
    assert mqtt.telemetry_topic(VIN) == f"{BASE}/telemetry"
    assert mqtt.events_topic(VIN) == f"{BASE}/events"
    assert mqtt.status_topic(VIN) == f"{BASE}/status"


def test_qos_and_retained_topics_follow_the_contract() -> None:
    assert (mqtt.QOS_DESIRED, mqtt.QOS_REPORTED, mqtt.QOS_EVENTS, mqtt.QOS_STATUS) == (1, 1, 1, 1)
    assert mqtt.QOS_TELEMETRY == 0
    assert mqtt.RETAIN_DESIRED and mqtt.RETAIN_STATUS


def test_platform_subscriptions_are_shared_by_the_caas_group() -> None:
    assert mqtt.SHARED_GROUP == "caas"
    assert mqtt.shared(mqtt.REPORTED_FILTER) == "$share/caas/caas/v1/vehicles/+/config/reported"
    assert mqtt.TELEMETRY_FILTER == "caas/v1/vehicles/+/telemetry"
    assert mqtt.EVENTS_FILTER == "caas/v1/vehicles/+/events"
    assert mqtt.STATUS_FILTER == "caas/v1/vehicles/+/status"


@pytest.mark.parametrize("channel", mqtt.CHANNELS)
def test_vin_of_reads_the_car_of_each_of_its_topics(channel: mqtt.Channel) -> None:
    name = mqtt.topic(VIN, channel)
    assert vin_of(name) == VIN
    assert mqtt.parse_topic(name) == (VIN, channel)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "caas/v1/vehicles",
        f"caas/v1/vehicles/{VIN}",
        f"caas/v1/vehicles/{VIN}/",
        f"caas/v1/vehicles/{VIN}/config",
        f"caas/v1/vehicles/{VIN}/config/desired/extra",
        f"caas/v1/vehicles/{VIN}/firmware",
        f"caas/v2/vehicles/{VIN}/status",
        f"other/v1/vehicles/{VIN}/status",
        f"/caas/v1/vehicles/{VIN}/status",
        "caas/v1/vehicles/+/status",
        "caas/v1/vehicles/#",
        "caas/v1/vehicles/NOTAVIN/status",
        f"caas/v1/vehicles/{VIN[:8]}0{VIN[9:]}/status",  # wrong check digit
        f"caas/v1/vehicles/{VIN.lower()}/status",
        f"$share/caas/caas/v1/vehicles/{VIN}/status",
    ],
)
def test_vin_of_refuses_foreign_topics(name: str) -> None:
    with pytest.raises(ValueError, match="not a vehicle topic"):
        vin_of(name)


def test_topics_are_built_for_valid_vins_only() -> None:
    with pytest.raises(ValueError):
        mqtt.desired_topic("+")
    with pytest.raises(ValueError):
        mqtt.status_topic(f"{VIN}/#")


def test_a_car_publishes_only_its_own_car_to_platform_topics() -> None:
    for name in (mqtt.reported_topic(VIN), mqtt.telemetry_topic(VIN), mqtt.events_topic(VIN),
                 mqtt.status_topic(VIN)):  # fmt: skip
        assert mqtt.car_may_publish(VIN, name)
        assert not mqtt.car_may_publish(OTHER_VIN, name)
    assert not mqtt.car_may_publish(VIN, mqtt.desired_topic(VIN))  # never its own config
    assert not mqtt.car_may_publish(VIN, "caas/v1/vehicles/+/status")


def test_a_car_subscribes_only_to_its_own_desired_topic() -> None:
    assert mqtt.car_may_subscribe(VIN, mqtt.desired_topic(VIN))
    assert not mqtt.car_may_subscribe(VIN, mqtt.desired_topic(OTHER_VIN))
    others = ["caas/v1/vehicles/+/config/desired", "caas/v1/vehicles/#", "#"]
    for topic_filter in [*others, mqtt.shared(mqtt.desired_topic(VIN)), mqtt.reported_topic(VIN)]:
        assert not mqtt.car_may_subscribe(VIN, topic_filter)


# --- payloads -------------------------------------------------------------------------------

ROOT, SIGNING = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
PHONE_ED25519 = Ed25519PrivateKey.generate()
PHONE_ECDSA = ec.generate_private_key(ec.SECP256R1())


def ecdsa_phone_key() -> PhoneKey:
    spki = PHONE_ECDSA.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return PhoneKey(
        key_id="pk-web",
        algorithm="ECDSA-P256-SHA256",
        public_key=base64.b64encode(spki).decode(),
        label="Web app",
    )


def ed25519_phone_key() -> PhoneKey:
    return PhoneKey(
        key_id="pk-1",
        algorithm="Ed25519",
        public_key=public_key_b64(PHONE_ED25519),
        label="Lucía's phone",
    )


def manifest_body() -> ManifestBody:
    return ManifestBody(
        vin=VIN,
        version=3,
        issued_at=NOW,
        features=[
            FeatureState(
                code="winter_traction",
                enabled=True,
                valid_from=NOW,
                valid_until=NOW + timedelta(days=90),
                parameters={"modes": ["snow", "ice"], "level": 2.5},
                affects_driving=True,
            )
        ],
        phone_keys=[ed25519_phone_key(), ecdsa_phone_key()],
        messages=["Winter traction is on until 15 April."],
    )


def certificate() -> SigningCertificate:
    return issue_certificate(
        ROOT,
        SIGNING.public_key(),
        key_id="signing-1",
        not_before=NOW,
        not_after=NOW + timedelta(days=90),
    )


EVERY_PAYLOAD: list[BaseModel] = [
    FeatureState(code="power_boost", enabled=False, affects_driving=True),
    ed25519_phone_key(),
    ecdsa_phone_key(),
    manifest_body(),
    certificate(),
    sign_manifest(manifest_body(), signing_key=SIGNING, certificate=certificate()),
    Reported(vin=VIN, version=3, status="applied", reason=None, at=NOW,
             active_features=["winter_traction"]),
    Reported(vin=VIN, version=4, status="rejected", reason="bad_signature", at=NOW),
    Reported(vin=VIN, version=5, status="deferred", reason="waiting_for_park", at=NOW),
    Telemetry(vin=VIN, seq=1, at=NOW, odometer_km=12_345.6, software_version="7.2.0",
              speed_kmh=87.5, parked=False, battery_percent=81.5, location=(40.4168, -3.7038),
              extra={"outside_temperature_c": -2.5}),
    Telemetry(vin=VIN, seq=2, at=NOW, odometer_km=0, software_version="7.2.0", speed_kmh=0,
              parked=True),
    UsageEvent(vin=VIN, seq=7, at=NOW, feature="motorway_autopilot", unit="km", quantity=42.3),
    Status(vin=VIN, online=True, at=NOW, software_version="7.2.0"),
    Status(vin=VIN, online=False, at=NOW),
]  # fmt: skip


@pytest.mark.parametrize("payload", EVERY_PAYLOAD, ids=lambda model: type(model).__name__)
def test_every_payload_round_trips_through_its_json(payload: BaseModel) -> None:
    wire = encode(payload)
    assert isinstance(wire, bytes)
    json.loads(wire)  # plain JSON, readable by any client
    assert decode(type(payload), wire) == payload
    assert decode(type(payload), wire.decode()) == payload


MODELS = [FeatureState, PhoneKey, ManifestBody, SigningCertificate, SignedManifest, Reported,
          Telemetry, UsageEvent, Status]  # fmt: skip


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_every_payload_refuses_unknown_fields(model: type[BaseModel]) -> None:
    example = next(payload for payload in EVERY_PAYLOAD if type(payload) is model)
    document = {**json.loads(encode(example)), "surprise": 1}
    with pytest.raises(MalformedPayload, match="surprise"):
        decode(model, json.dumps(document).encode())


def test_datetimes_are_normalised_to_utc() -> None:
    madrid = NOW.astimezone(timezone(timedelta(hours=1)))
    status = Status(vin=VIN, online=True, at=madrid)
    assert status.at.utcoffset() == timedelta(0)
    assert b'"at":"2026-01-15T09:00:00Z"' in encode(status)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"", "Status: payload: Invalid JSON"),
        (b"{not json", "Invalid JSON"),
        (b'{"vin": "X", "online": true, "at": "2026-01-15T09:00:00Z"}', "vin"),
        (f'{{"vin": "{VIN}", "online": true, "at": "2026-01-15T09:00:00"}}'.encode(), "at"),
        (f'{{"vin": "{VIN}", "online": "maybe", "at": "2026-01-15T09:00:00Z"}}'.encode(),
         "online"),
        (f'{{"vin": "{VIN}", "at": "2026-01-15T09:00:00Z"}}'.encode(), "online"),
    ],
)  # fmt: skip
def test_malformed_payloads_say_what_is_wrong(payload: bytes, says: str) -> None:
    with pytest.raises(MalformedPayload, match=says):
        decode(Status, payload)


def test_telemetry_refuses_nonsense_numbers() -> None:
    good = json.loads(encode(EVERY_PAYLOAD[9]))
    for field, value in [("odometer_km", -1), ("speed_kmh", 1e9), ("battery_percent", 101),
                         ("location", [91, 0]), ("seq", -1)]:  # fmt: skip
        with pytest.raises(MalformedPayload, match=field):
            decode(Telemetry, json.dumps({**good, field: value}).encode())
    with pytest.raises(MalformedPayload, match="extra"):
        decode(Telemetry, json.dumps(good).replace("-2.5", "NaN").encode())


def test_a_rejection_must_say_why() -> None:
    with pytest.raises(MalformedPayload, match="reason"):
        decode(Reported, json.dumps({"vin": VIN, "version": 4, "status": "rejected",
                                     "reason": None, "at": "2026-01-15T09:00:00Z"}))  # fmt: skip


def test_a_manifest_lists_each_feature_and_each_phone_once() -> None:
    document = json.loads(encode(manifest_body()))
    twice = {**document, "features": document["features"] * 2}
    with pytest.raises(MalformedPayload, match="feature is listed twice"):
        decode(ManifestBody, json.dumps(twice))
    same_key = {**document, "phone_keys": [document["phone_keys"][0]] * 2}
    with pytest.raises(MalformedPayload, match="key_id is listed twice"):
        decode(ManifestBody, json.dumps(same_key))


def test_a_feature_window_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="valid_until"):
        FeatureState(code="power_boost", enabled=True, valid_from=NOW, valid_until=NOW,
                     affects_driving=True)  # fmt: skip


def test_a_feature_is_active_inside_its_window_only() -> None:
    state = FeatureState(code="power_boost", enabled=True, valid_from=NOW,
                         valid_until=NOW + timedelta(days=1), affects_driving=True)  # fmt: skip
    assert not state.active_at(NOW - timedelta(seconds=1))
    assert state.active_at(NOW)
    assert not state.active_at(NOW + timedelta(days=1))
    assert not state.model_copy(update={"enabled": False}).active_at(NOW)
    forever = FeatureState(code="power_boost", enabled=True, affects_driving=False)
    assert forever.active_at(NOW + timedelta(days=10_000))


@pytest.mark.parametrize(
    ("algorithm", "public_key"),
    [
        ("Ed25519", "AAAA"),
        ("Ed25519", base64.b64encode(b"x" * 31).decode()),
        ("ECDSA-P256-SHA256", public_key_b64(Ed25519PrivateKey.generate())),
        ("ECDSA-P256-SHA256", "not base64!"),
        ("RSA", public_key_b64(Ed25519PrivateKey.generate())),
    ],
)
def test_a_phone_key_must_be_a_key_of_its_algorithm(algorithm: str, public_key: str) -> None:
    document = {"key_id": "pk", "algorithm": algorithm, "public_key": public_key, "label": "x"}
    with pytest.raises(MalformedPayload):
        decode(PhoneKey, json.dumps(document))


def test_an_ecdsa_phone_key_must_be_on_p256() -> None:
    other_curve = ec.generate_private_key(ec.SECP384R1()).public_key()
    spki = other_curve.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="P-256"):
        PhoneKey(key_id="pk", algorithm="ECDSA-P256-SHA256",
                 public_key=base64.b64encode(spki).decode(), label="x")  # fmt: skip


def test_a_phone_key_verifies_its_phones_challenge_signatures() -> None:
    challenge = b"start:" + VIN.encode() + b":nonce-42"
    ed = ed25519_phone_key()
    assert ed.verifies(challenge, PHONE_ED25519.sign(challenge))
    assert not ed.verifies(challenge + b"!", PHONE_ED25519.sign(challenge))
    assert not ed.verifies(challenge, Ed25519PrivateKey.generate().sign(challenge))

    # WebCrypto's ECDSA signature is r || s, 32 bytes each.
    r, s = decode_dss_signature(PHONE_ECDSA.sign(challenge, ec.ECDSA(hashes.SHA256())))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    web = ecdsa_phone_key()
    assert web.verifies(challenge, raw)
    assert not web.verifies(challenge + b"!", raw)
    assert not web.verifies(challenge, raw[:-1])
    assert not web.verifies(challenge, PHONE_ECDSA.sign(challenge, ec.ECDSA(hashes.SHA256())))


def test_keys_are_in_standard_base64_only() -> None:
    document = json.loads(encode(certificate()))
    key = document["public_key"]
    # 32 bytes take 43 characters and "=": the low 2 bits of the 43rd character are unused, so
    # flipping one writes the same bytes as another text. Only the standard text is accepted.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sibling = key[:42] + alphabet[alphabet.index(key[42]) ^ 1] + "="
    assert sibling != key
    assert base64.b64decode(sibling) == base64.b64decode(key)
    with pytest.raises(MalformedPayload, match="standard base64"):
        decode(SigningCertificate, json.dumps({**document, "public_key": sibling}))
