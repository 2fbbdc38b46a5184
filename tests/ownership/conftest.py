"""Builders for change-of-owner tests: a delivered car with options bought and captured, a
buyer who can log in, a simulated car applying the platform's manifests, phones as keys."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.ota.keys import SigningMaterial
from caas.ota.service import manifest_payload, versions_of
from caas.sales import service as sales
from caas.sales.models import Customer
from caas.sales.schemas import CustomerIdentity
from caas.seed import DEMO_PASSWORD
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from tests.billing.conftest import payment_sandbox, settings
from tests.factories import customer_payload
from tests.vehicles.support import fresh_dni
from tests.vehicles.test_phone_keys import p256, webcrypto_signature

__all__ = ["payment_sandbox", "settings"]


@dataclass(frozen=True)
class Person:
    customer: Customer
    user: User


def buyer(db: Session, now: datetime, *, email: str = "bruno.buyer@example.es") -> Person:
    """Another customer of the maker, who can log in with the demo password; committed."""
    identity = CustomerIdentity(
        **customer_payload("ES", national_id=fresh_dni(), email=email, first_name="Bruno")
    )
    customer, _ = sales.find_or_create_customer(db, identity=identity, now=now)
    user = db.get_one(User, customer.user_id)
    user.password_hash = hash_password(DEMO_PASSWORD)
    user.activated_at = now
    db.commit()
    return Person(customer, user)


def log_in(client: TestClient, email: str) -> TestClient:
    client.cookies.clear()
    response = client.post("/api/v1/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    return client


class SimulatedCar:
    """The car's own software (`caas_sim`), fed the newest manifest the platform signed."""

    def __init__(self, db: Session, vehicle_id: int, vin: str, material: SigningMaterial, now):  # type: ignore[no-untyped-def]
        self.db = db
        self.vehicle_id = vehicle_id
        self.agent = VehicleAgent(
            CarIdentity(
                vin=vin,
                password="unused",
                private_key=Ed25519PrivateKey.generate(),
                root_public_key=material.root_public_key,
            ),
            BrokerEndpoint("127.0.0.1"),
            now=now,
        )

    def apply_newest(self) -> list[str]:
        """Deliver the newest manifest; the features the car runs after applying it."""
        self.db.expire_all()
        report = self.agent.receive(manifest_payload(versions_of(self.db, self.vehicle_id)[0]))
        assert report is not None and report.status == "applied", report
        return list(report.active_features)

    def unlock_with(self, phone: ec.EllipticCurvePrivateKey, key_id: str) -> str | None:
        """None when the car opens for the phone, else the car's reason for refusing."""
        nonce = self.agent.challenge().nonce
        signature = base64.b64encode(webcrypto_signature(phone, nonce.encode("ascii"))).decode()
        answer = self.agent.operate("unlock", key_id, signature, nonce=nonce)
        return None if answer.granted else answer.reason


def pair(
    client: TestClient, vin: str, label: str, key: str
) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """Pair a new phone through the API; the phone's private key and its id in the car."""
    phone, public = p256()
    response = client.post(
        f"/api/v1/vehicles/{vin}/phones",
        json={"public_key": public, "algorithm": "ECDSA-P256-SHA256", "label": label},
        headers={"Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    return phone, response.json()["car_key_id"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
