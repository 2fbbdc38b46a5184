"""Builders for registration and delivery tests: an order whose car waits at the dealer (or is
already registered), the registry simulator served for real, and logins."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.protocol.vin import make_vin, model_year_code
from caas.sales import service as sales
from caas.sales.models import Customer, Sale
from caas.sales.schemas import CommercialPlan, CustomerIdentity
from caas.seed import DEMO_PASSWORD
from caas.vehicles.models import Vehicle
from caas_sim.registry import create_app
from tests.factories import customer_payload, salesperson
from tests.servers import serving

REGISTRY_API_KEY = "test-registry-api-key"
DEALERS = {
    "ES": "sales.madrid@caas.example",
    "FR": "sales.lyon@caas.example",
    "DE": "sales.muenchen@caas.example",
    "IT": "sales.milano@caas.example",
    "PT": "sales.porto@caas.example",
}

_serials = itertools.count(1)


@dataclass(frozen=True)
class Order:
    sale_id: int
    customer_id: int
    customer_email: str
    customer_user_id: int
    vehicle_id: int
    vin: str


def order_in_state(
    db: Session,
    *,
    settings: Settings,
    now: datetime,
    state: str = "at_dealer",
    country: str = "ES",
    **identity: Any,
) -> Order:
    """A sale closed by the country's demo salesperson, its car built, its order put straight
    into `state` (set-up only: the factory's stages are other tests' business). Committed."""
    sale = sales.create_sale(
        db,
        salesperson=salesperson(db, country),
        identity=CustomerIdentity(**customer_payload(country, **identity)),
        plan=CommercialPlan(
            platform="AURA",
            features=["driver_assist"],
            service_period_months=48,
            maintenance_included=True,
        ),
        settings=settings,
        now=now,
    )
    sale.state = state
    vin = make_vin("WC9", "AURA1", model_year_code(2026), "M", next(_serials))
    vehicle = Vehicle(
        vin=vin,
        sale_id=sale.id,
        platform_id=sale.platform_id,
        owner_customer_id=sale.customer_id,
        public_key="test-public-key",
        software_version="7.2.0",
        built_at=now,
    )
    db.add(vehicle)
    db.flush()
    customer = db.get_one(Customer, sale.customer_id)
    db.commit()
    return Order(
        sale_id=sale.id,
        customer_id=customer.id,
        customer_email=customer.email,
        customer_user_id=customer.user_id,
        vehicle_id=vehicle.id,
        vin=vin,
    )


def sale_of(db: Session, order: Order) -> Sale:
    db.expire_all()
    return db.get_one(Sale, order.sale_id)


def vehicle_of(db: Session, order: Order) -> Vehicle:
    db.expire_all()
    return db.get_one(Vehicle, order.vehicle_id)


def notified_kinds(db: Session, order: Order) -> list[str]:
    """The in-app notifications the customer got, oldest first."""
    query = (
        select(Notification.kind)
        .where(Notification.user_id == order.customer_user_id)
        .order_by(Notification.id)
    )
    return list(db.scalars(query))


def login(client: TestClient, email: str) -> None:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text


def let_customer_log_in(db: Session, order: Order, now: datetime) -> None:
    user = db.get_one(User, order.customer_user_id)
    user.password_hash = hash_password(DEMO_PASSWORD)
    user.activated_at = now
    db.commit()


@dataclass
class RegistrySim:
    """The registry simulator on a free port, with its test controls."""

    url: str

    def reject_next(self, country: str, reason: str, field: str | None = None) -> None:
        response = httpx.post(
            f"{self.url}/sim/reject-next",
            json={"country": country, "reason": reason, "field": field},
        )
        assert response.status_code == 204, response.text

    def outage(self, *, down: bool) -> None:
        response = httpx.post(f"{self.url}/sim/outage", json={"down": down})
        assert response.status_code == 204, response.text

    def registrations(self) -> list[dict[str, str]]:
        result: list[dict[str, str]] = httpx.get(f"{self.url}/sim/registrations").json()
        return result


def serve_registries(**options: Any) -> Iterator[RegistrySim]:
    with serving(create_app(api_key=REGISTRY_API_KEY, **options)) as server:
        yield RegistrySim(server.url)
