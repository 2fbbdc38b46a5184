"""A resale recorded at a dealership and a scrapped car, as the registry (the simulator, served
for real) sees them: the new holder recorded, retried while the registry is down; the car's
registration closed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.models import Dealership, User
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.ownership.models import Scrapping, Transfer
from caas.registration.base import Registered
from caas.registration.client import RegistryClient
from caas.registration.countries import adapter_for
from caas.sales.models import Customer, Sale
from caas.vehicles.models import Vehicle
from tests.factories import customer_payload
from tests.ownership.conftest import log_in
from tests.registration.support import DEALERS, REGISTRY_API_KEY, RegistrySim, serve_registries
from tests.store.conftest import Owner, delivered_owner, run_all_due
from tests.store.engine import engine_keys, signing
from tests.vehicles.support import fresh_dni

__all__ = ["engine_keys", "signing"]


@pytest.fixture
def registry() -> Iterator[RegistrySim]:
    yield from serve_registries(seed=11)


@pytest.fixture
def wired(settings: Settings, registry: RegistrySim) -> Settings:
    return settings.model_copy(
        update={"registry_url": registry.url, "registry_api_key": REGISTRY_API_KEY}
    )


@pytest.fixture
def registered(
    db: Session, wired: Settings, clock: FixedClock, signing: SigningMaterial, registry: RegistrySim
) -> Owner:
    """A delivered car registered at the DGT, as the registration flow leaves it."""
    owner = delivered_owner(db, wired, clock)
    sale = db.get_one(Sale, owner.car.sale_id)
    sale.state = "delivered"
    adapter = adapter_for("ES")
    client = RegistryClient(base_url=registry.url, api_key=REGISTRY_API_KEY)
    request = adapter.build_request(
        owner.customer, owner.vehicle, db.get_one(Dealership, sale.dealership_id)
    )
    outcome = adapter.parse(*client.send(adapter, request))
    client.close()
    assert isinstance(outcome, Registered)
    owner.vehicle.plate, owner.vehicle.registered_country = outcome.plate, "ES"
    db.commit()
    return owner


def test_a_dealer_records_a_resale_and_the_registry_gets_the_new_holder_once_it_is_up(
    app_client: TestClient,
    db: Session,
    registered: Owner,
    wired: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    registry: RegistrySim,
) -> None:
    vin = registered.vehicle.vin
    dealer = log_in(app_client, DEALERS["ES"])
    buyer = customer_payload(
        "ES", national_id=fresh_dni(), email="diego.buyer@example.es", first_name="Diego"
    )
    body = {"vin": vin, "seller_national_id": "00000000T", "buyer": buyer}
    not_the_owner = dealer.post(
        "/api/v1/resales", json=body, headers={"Idempotency-Key": "r-1" * 3}
    )
    assert not_the_owner.status_code == 404

    registry.outage(down=True)
    body["seller_national_id"] = registered.customer.national_id.lower()
    recorded = dealer.post("/api/v1/resales", json=body, headers={"Idempotency-Key": "resale-0001"})
    assert recorded.status_code == 201, recorded.text
    assert (recorded.json()["kind"], recorded.json()["registry_state"]) == ("dealer", "pending")
    db.expire_all()
    vehicle = db.get_one(Vehicle, registered.vehicle.id)
    new_owner = db.get_one(Customer, vehicle.owner_customer_id)
    assert new_owner.email == "diego.buyer@example.es"
    assert db.get_one(User, new_owner.user_id).activated_at is None  # activated from the e-mail

    run_all_due(wired, sessions, clock, db)  # the registry is down: the job waits
    transfer = db.get_one(Transfer, recorded.json()["id"])
    assert transfer.registry_state == "pending"
    (entry,) = [r for r in registry.registrations() if r["vin"] == vin]
    assert entry["holder"] == f"{registered.customer.first_name} {registered.customer.last_name}"

    registry.outage(down=False)
    clock.advance(timedelta(minutes=15))
    run_all_due(wired, sessions, clock, db)
    transfer = db.get_one(Transfer, recorded.json()["id"])
    assert transfer.registry_state == "recorded"
    (entry,) = [r for r in registry.registrations() if r["vin"] == vin]
    assert entry["holder"] == f"Diego {buyer['last_name']}"
    assert entry["plate"] == vehicle.plate  # the car keeps its plate

    # The seller no longer owns it; a retry of the dealer's request repeats nothing.
    again = dealer.post("/api/v1/resales", json=body, headers={"Idempotency-Key": "resale-0001"})
    assert again.json() == recorded.json()
    assert db.scalar(select(Transfer.id).where(Transfer.id != transfer.id)) is None


def test_a_scrapped_car_is_deregistered(
    app_client: TestClient,
    db: Session,
    registered: Owner,
    wired: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    registry: RegistrySim,
) -> None:
    vin = registered.vehicle.vin
    operator = log_in(app_client, "operator@caas.example")
    scrapped = operator.post(
        f"/api/v1/vehicles/{vin}/scrap",
        json={"reason": "Total loss after a flood", "certificate_number": "CD-2026-0042"},
        headers={"Idempotency-Key": "scrap-0001"},
    )
    assert scrapped.status_code == 201, scrapped.text
    run_all_due(wired, sessions, clock, db)
    scrapping = db.scalars(
        select(Scrapping).where(Scrapping.vehicle_id == registered.vehicle.id)
    ).one()
    assert scrapping.registry_state == "recorded"
    (entry,) = [r for r in registry.registrations() if r["vin"] == vin]
    assert entry["state"] == "deregistered"
