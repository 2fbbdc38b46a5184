"""Small builders of test data, each returning what a test needs and nothing more."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import Dealership, Role, User
from caas.accounts.service import create_user
from caas.seed import DEMO_PASSWORD

_counter = itertools.count(1)

# Valid identities per country (check digits computed by python-stdnum's rules).
IDENTITIES: dict[str, dict[str, str]] = {
    "ES": {"national_id": "12345678Z", "phone": "+34 612 345 678", "postal_code": "28013",
           "city": "Madrid", "street": "Calle Mayor 1"},
    "FR": {"national_id": "2 95 10 99 126 111 93", "phone": "+33 6 12 34 56 78",
           "postal_code": "69003", "city": "Lyon", "street": "3 rue de la République"},
    "DE": {"national_id": "36 574 261 809", "phone": "+49 1512 3456789", "postal_code": "80802",
           "city": "München", "street": "Leopoldstraße 10"},
    "IT": {"national_id": "RCCMNL83S18D969H", "phone": "+39 312 345 6789",
           "postal_code": "20124", "city": "Milano", "street": "Via Roma 5"},
    "PT": {"national_id": "123456789", "phone": "+351 912 345 678", "postal_code": "4100-113",
           "city": "Porto", "street": "Rua de Santa Catarina 20"},
}  # fmt: skip


def salesperson(session: Session, country: str = "ES") -> User:
    query = (
        select(User)
        .join(Dealership, Dealership.id == User.dealership_id)
        .where(Dealership.country == country, User.role == Role.DEALER)
    )
    return session.scalars(query).one()


def new_salesperson(session: Session, dealership_code: str, now: datetime) -> User:
    dealership = session.scalars(select(Dealership).where(Dealership.code == dealership_code)).one()
    return create_user(
        session,
        email=f"seller{next(_counter)}@caas.example",
        full_name="Second Seller",
        role=Role.DEALER,
        dealership_id=dealership.id,
        password=DEMO_PASSWORD,
        now=now,
    )


def customer_payload(country: str = "ES", **overrides: Any) -> dict[str, Any]:
    number = next(_counter)
    payload: dict[str, Any] = {
        "country": country,
        "first_name": "Ana",
        "last_name": f"García {number}",
        "email": f"ana{number}@example.com",
        "language": "es" if country == "ES" else "en",
        **IDENTITIES[country],
    }
    payload.update(overrides)
    return payload


def sale_payload(country: str = "ES", **customer_overrides: Any) -> dict[str, Any]:
    return {
        "customer": customer_payload(country, **customer_overrides),
        "plan": {
            "platform": "AURA",
            "features": ["driver_assist"],
            "service_period_months": 48,
            "maintenance_included": True,
        },
    }
