"""The phone is the key: the owner pairs phones with their delivered car, adds a second
driver's, revokes a lost one; each change reaches the car in its next signed manifest."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import subject_history
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.ota.service import manifest_payload, versions_of
from caas.protocol.mqtt import ManifestBody
from caas.vehicles import keys
from caas.vehicles.models import Vehicle
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from tests.registration.support import (
    DEALERS,
    Order,
    let_customer_log_in,
    login,
    order_in_state,
    sale_of,
)


def p256() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A phone's key pair as WebCrypto makes it, with the public half as SPKI base64."""
    private = ec.generate_private_key(ec.SECP256R1())
    spki = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(spki).decode()


def webcrypto_signature(private: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-256 SHA-256 as WebCrypto returns it: r || s, 32 bytes each."""
    r, s = decode_dss_signature(private.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def ed25519_public() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def delivered(
    db: Session, settings: Settings, clock: FixedClock, state: str = "delivered"
) -> Order:
    order = order_in_state(db, settings=settings, now=clock.now(), state=state)
    if state == "delivered":
        db.get_one(Vehicle, order.vehicle_id).delivered_at = clock.now()
    let_customer_log_in(db, order, clock.now())
    return order


@pytest.fixture
def order(db: Session, settings: Settings, clock: FixedClock) -> Order:
    return delivered(db, settings, clock)


@pytest.fixture
def owner(app_client: TestClient, order: Order) -> TestClient:
    login(app_client, order.customer_email)
    return app_client


def pair(
    client: TestClient, vin: str, public_key: str, *, label: str = "Ana's phone",
    algorithm: str = "ECDSA-P256-SHA256", key: str | None = None,
) -> Any:  # fmt: skip
    return client.post(
        f"/api/v1/vehicles/{vin}/phones",
        json={"public_key": public_key, "algorithm": algorithm, "label": label},
        headers={"Idempotency-Key": key or f"pair-{public_key[-20:]}"},
    )


def newest_manifest(db: Session, order: Order) -> ManifestBody:
    db.expire_all()
    return ManifestBody.model_validate(versions_of(db, order.vehicle_id)[0].body)


def test_the_owner_pairs_a_phone_and_the_next_manifest_carries_it(
    owner: TestClient, db: Session, order: Order
) -> None:
    private, public = p256()
    response = pair(owner, order.vin, public)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["label"], body["algorithm"], body["active"]) == (
        "Ana's phone",
        "ECDSA-P256-SHA256",
        True,
    )
    assert body["car_key_id"] == f"pk-{body['id']}"

    manifest = newest_manifest(db, order)
    [carried] = manifest.phone_keys
    assert (carried.key_id, carried.public_key) == (body["car_key_id"], public)
    # What the car checks: the phone's WebCrypto signature of its challenge.
    challenge = b"nonce-from-the-car"
    assert carried.verifies(challenge, webcrypto_signature(private, challenge))
    assert not carried.verifies(challenge, webcrypto_signature(p256()[0], challenge))

    listed = owner.get(f"/api/v1/vehicles/{order.vin}/phones").json()
    assert [key["id"] for key in listed] == [body["id"]]


def test_the_first_pairing_ends_the_orders_journey(
    owner: TestClient, db: Session, clock: FixedClock, order: Order
) -> None:
    assert pair(owner, order.vin, p256()[1]).status_code == 201
    clock.advance(timedelta(minutes=5))
    assert pair(owner, order.vin, p256()[1], label="second driver").status_code == 201
    assert sale_of(db, order).state == "delivered"
    paired = [e for e in subject_history(db, "order", order.sale_id) if e.event == "car.paired"]
    assert len(paired) == 1
    assert paired[0].customer_id == order.customer_id
    assert paired[0].details["vin"] == order.vin
    car_events = [e.event for e in subject_history(db, "vehicle", order.vehicle_id)]
    assert car_events.count("phone.paired") == 2


def test_a_second_drivers_phone_is_carried_beside_the_owners(
    owner: TestClient, db: Session, order: Order
) -> None:
    pair(owner, order.vin, p256()[1])
    second = pair(owner, order.vin, ed25519_public(), label="second driver", algorithm="Ed25519")
    assert second.status_code == 201, second.text
    labels = [(key.label, key.algorithm) for key in newest_manifest(db, order).phone_keys]
    assert labels == [("Ana's phone", "ECDSA-P256-SHA256"), ("second driver", "Ed25519")]


def test_revoking_a_lost_phone_sends_a_manifest_without_it(
    owner: TestClient, db: Session, clock: FixedClock, order: Order
) -> None:
    lost = pair(owner, order.vin, p256()[1], label="lost phone").json()
    kept = pair(owner, order.vin, p256()[1], label="new phone").json()
    versions_before = len(versions_of(db, order.vehicle_id))

    clock.advance(timedelta(hours=1))
    revoked = owner.delete(f"/api/v1/vehicles/{order.vin}/phones/{lost['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["active"] is False
    assert revoked.json()["revoked_at"] is not None

    manifest = newest_manifest(db, order)
    assert [key.key_id for key in manifest.phone_keys] == [kept["car_key_id"]]
    assert [key.key_id for key in keys.active_phone_keys(db, order.vehicle_id)] == [
        kept["car_key_id"]
    ]
    assert len(versions_of(db, order.vehicle_id)) == versions_before + 1
    assert versions_of(db, order.vehicle_id)[0].reason == "phone.revoked"

    # Revoking it again changes nothing and issues no manifest.
    again = owner.delete(f"/api/v1/vehicles/{order.vin}/phones/{lost['id']}")
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert len(versions_of(db, order.vehicle_id)) == versions_before + 1
    listed = owner.get(f"/api/v1/vehicles/{order.vin}/phones").json()
    assert [(key["label"], key["active"]) for key in listed] == [
        ("new phone", True),
        ("lost phone", False),
    ]


def test_a_revoked_phone_can_be_paired_again(owner: TestClient, order: Order) -> None:
    _, public = p256()
    first = pair(owner, order.vin, public, key="pair-once-0001").json()
    owner.delete(f"/api/v1/vehicles/{order.vin}/phones/{first['id']}")
    again = pair(owner, order.vin, public, key="pair-again-0001")
    assert again.status_code == 201, again.text


def test_a_retry_with_the_same_key_pairs_once(owner: TestClient, db: Session, order: Order) -> None:
    _, public = p256()
    first = pair(owner, order.vin, public, key="pair-retry-0001")
    retry = pair(owner, order.vin, public, key="pair-retry-0001")
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert len(owner.get(f"/api/v1/vehicles/{order.vin}/phones").json()) == 1
    assert len(versions_of(db, order.vehicle_id)) == 1


def test_the_same_phone_twice_is_a_conflict(owner: TestClient, order: Order) -> None:
    _, public = p256()
    pair(owner, order.vin, public, key="pair-twice-0001")
    twice = pair(owner, order.vin, public, key="pair-twice-0002")
    assert twice.status_code == 409
    assert twice.json()["code"] == "phone_key.already_paired"


def test_pairing_waits_for_the_delivery(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    on_its_way = delivered(db, settings, clock, state="in_transit")
    login(app_client, on_its_way.customer_email)
    response = pair(app_client, on_its_way.vin, p256()[1])
    assert response.status_code == 409
    assert response.json()["code"] == "phone_key.not_delivered"
    assert versions_of(db, on_its_way.vehicle_id) == []


def test_nobody_but_the_owner_finds_the_car(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock, order: Order
) -> None:
    login(app_client, order.customer_email)
    paired = pair(app_client, order.vin, p256()[1]).json()

    other = order_in_state(db, settings=settings, now=clock.now(), state="delivered", country="FR")
    let_customer_log_in(db, other, clock.now())
    for email in (other.customer_email, DEALERS["ES"]):
        login(app_client, email)
        attempts = [
            pair(app_client, order.vin, p256()[1]),
            app_client.get(f"/api/v1/vehicles/{order.vin}/phones"),
            app_client.delete(f"/api/v1/vehicles/{order.vin}/phones/{paired['id']}"),
        ]
        assert [a.status_code for a in attempts] == [404, 404, 404], email
        assert all(a.json()["code"] == "vehicle.not_found" for a in attempts)
    # The owner of another car cannot revoke this car's key through their own car either.
    other_vehicle = db.get_one(Vehicle, other.vehicle_id)
    other_vehicle.delivered_at = clock.now()
    db.commit()
    login(app_client, other.customer_email)
    response = app_client.delete(f"/api/v1/vehicles/{other.vin}/phones/{paired['id']}")
    assert response.status_code == 404
    assert response.json()["code"] == "phone_key.not_found"


def _rsa_spki() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    return base64.b64encode(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).decode()


def _p384_spki() -> str:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    return base64.b64encode(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).decode()


@pytest.mark.parametrize(
    ("algorithm", "public_key", "field"),
    [
        ("ECDSA-P256-SHA256", "this is not base64 at all, not even close!!", "public_key"),
        ("ECDSA-P256-SHA256", base64.b64encode(bytes(91)).decode(), "public_key"),
        ("ECDSA-P256-SHA256", _rsa_spki(), "public_key"),
        ("ECDSA-P256-SHA256", _p384_spki(), "public_key"),
        ("Ed25519", base64.b64encode(bytes(31) + b"\x01" * 10).decode(), "public_key"),
        ("RSA-2048", p256()[1], "algorithm"),
    ],
)
def test_a_malformed_key_is_refused_naming_the_field(
    owner: TestClient, db: Session, order: Order, algorithm: str, public_key: str, field: str
) -> None:
    response = pair(owner, order.vin, public_key, algorithm=algorithm)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert owner.get(f"/api/v1/vehicles/{order.vin}/phones").json() == []


def test_pairing_needs_an_idempotency_key(owner: TestClient, order: Order) -> None:
    response = owner.post(
        f"/api/v1/vehicles/{order.vin}/phones",
        json={"public_key": p256()[1], "label": "Ana's phone"},
    )
    assert response.status_code == 422
    assert response.json()["field"] == "Idempotency-Key"


def test_the_car_opens_only_for_a_paired_phone_and_forgets_a_revoked_one(
    owner: TestClient, db: Session, clock: FixedClock, order: Order, signing_with: SigningMaterial
) -> None:
    """The whole key, platform to car: the simulated car applies the manifests the platform
    signed, then answers the phone's signed challenges (without any network)."""
    car = VehicleAgent(
        CarIdentity(
            vin=order.vin,
            password="unused",
            private_key=Ed25519PrivateKey.generate(),
            root_public_key=signing_with.root_public_key,
        ),
        BrokerEndpoint("127.0.0.1"),
        now=clock.now,
    )

    def deliver_newest_manifest() -> None:
        db.expire_all()
        report = car.receive(manifest_payload(versions_of(db, order.vehicle_id)[0]))
        assert report is not None and report.status == "applied", report

    def try_key(phone: ec.EllipticCurvePrivateKey, key_id: str) -> str | None:
        nonce = car.challenge().nonce
        signature = base64.b64encode(webcrypto_signature(phone, nonce.encode("ascii"))).decode()
        answer = car.operate("unlock", key_id, signature, nonce=nonce)
        return None if answer.granted else answer.reason

    phone, public = p256()
    assert try_key(phone, "pk-1") == "not_paired"
    paired = pair(owner, order.vin, public).json()
    deliver_newest_manifest()
    assert try_key(phone, paired["car_key_id"]) is None
    assert car.locked is False
    stranger = p256()[0]
    assert try_key(stranger, paired["car_key_id"]) == "bad_signature"

    second = pair(owner, order.vin, p256()[1], label="second driver").json()
    owner.delete(f"/api/v1/vehicles/{order.vin}/phones/{paired['id']}")
    deliver_newest_manifest()
    assert [key.label for key in car.phone_keys] == ["second driver"]
    assert try_key(phone, paired["car_key_id"]) == "key_not_authorised"
    assert second["car_key_id"] in [key.key_id for key in car.phone_keys]
