"""Builders for tests about a customer's own things: a sold customer who can log in, a car."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.catalog.models import Platform
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from caas.sales import service as sales
from caas.sales.models import Customer, Sale
from caas.sales.schemas import CommercialPlan, CustomerIdentity
from caas.seed import DEMO_PASSWORD
from caas.vehicles.models import Vehicle
from tests.billing.conftest import PaymentSandbox
from tests.factories import customer_payload, salesperson


@dataclass(frozen=True)
class SoldCustomer:
    customer: Customer
    user: User
    sale: Sale

    @property
    def email(self) -> str:
        return self.customer.email


def sold_customer(
    db: Session,
    *,
    settings: Settings,
    now: datetime,
    country: str = "ES",
    platform: str = "AURA",
    features: list[str] | None = None,
    maintenance_included: bool = True,
    **identity: Any,
) -> SoldCustomer:
    """A sale closed by the country's demo salesperson; the customer has activated their
    account with the demo password, so they can log in."""
    sale = sales.create_sale(
        db,
        salesperson=salesperson(db, country),
        identity=CustomerIdentity(**customer_payload(country, **identity)),
        plan=CommercialPlan(
            platform=platform,
            features=features if features is not None else ["driver_assist"],
            service_period_months=48,
            maintenance_included=maintenance_included,
        ),
        settings=settings,
        now=now,
    )
    customer = db.get_one(Customer, sale.customer_id)
    user = db.get_one(User, customer.user_id)
    user.password_hash = hash_password(DEMO_PASSWORD)
    user.activated_at = now
    db.flush()
    return SoldCustomer(customer=customer, user=user, sale=sale)


def car_for(
    db: Session,
    sale: Sale,
    *,
    vin: str,
    built_at: datetime,
    delivered_at: datetime | None = None,
    plate: str | None = None,
) -> Vehicle:
    """The car row the factory would have created for `sale` (a valid VIN is up to the test)."""
    platform = db.get_one(Platform, sale.platform_id)
    vehicle = Vehicle(
        vin=vin,
        sale_id=sale.id,
        platform_id=platform.id,
        owner_customer_id=sale.customer_id,
        public_key="test-public-key",
        software_version=platform.software_version,
        plate=plate,
        registered_country=sale.country if plate else None,
        built_at=built_at,
        registered_at=delivered_at if plate else None,
        delivered_at=delivered_at,
    )
    db.add(vehicle)
    db.flush()
    return vehicle


def login(client: TestClient, email: str, password: str = DEMO_PASSWORD) -> None:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text


def another_sale(
    db: Session, sold: SoldCustomer, *, settings: Settings, now: datetime, at_country: str
) -> Sale:
    """The same customer buys again, this time from the demo dealership of `at_country`."""
    customer = sold.customer
    identity = CustomerIdentity(
        country=customer.country,
        first_name=customer.first_name,
        last_name=customer.last_name,
        national_id=customer.national_id,
        email=customer.email,
        phone=customer.phone,
        street=customer.street,
        postal_code=customer.postal_code,
        city=customer.city,
        language=customer.language,
    )
    return sales.create_sale(
        db,
        salesperson=salesperson(db, at_country),
        identity=identity,
        plan=CommercialPlan(
            platform="CIRRUS", features=[], service_period_months=36, maintenance_included=False
        ),
        settings=settings,
        now=now,
    )


def pay_deposit(client: TestClient, sandbox: PaymentSandbox, sold: SoldCustomer) -> None:
    """The customer pays the deposit in their portal with a card the payment sandbox accepts."""
    login(client, sold.email)
    response = client.post(
        f"/api/v1/sales/{sold.sale.id}/payments",
        json={"kind": "deposit", "card_token": sandbox.token(CARD_SUCCEEDS)},
        headers={"Idempotency-Key": f"deposit-{sold.sale.id}"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "captured", response.text
