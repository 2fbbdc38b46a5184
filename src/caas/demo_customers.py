"""The demo's ready customers: each walked through the real journey over the platform's HTTP
API, as the people involved would (the salesperson sells, the customer activates from the
e-mail and pays by card, the factory builds, the registry registers, the dealer delivers), so
a newcomer finds a delivered, connected car to try the store with.

`prepare` looks at where the customer's order stands and does the next step, until the car is
delivered: a second run (or a run after an interrupted one) picks up where the order is and
creates nothing twice. Every command carries an Idempotency-Key derived from the order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.protocol.payments import CARD_SUCCEEDS
from caas.sales.models import Customer
from caas.seed import DEMO_PASSWORD, DemoLogin
from caas.vehicles.models import Vehicle

# How fast the factory builds a ready customer's car: one stage every so many seconds.
EXPRESS_STAGE_SECONDS = 0.5
# A refused registration is corrected and sent again, as a dealer would, at most this often.
REGISTRATION_ATTEMPTS = 20
CARRIER = "caas demo transport"
HTTP_SECONDS = 15.0


@dataclass(frozen=True)
class DemoCustomer:
    """A ready customer: who buys, where, and what plan."""

    email: str
    first_name: str
    last_name: str
    country: str
    language: str
    national_id: str
    phone: str
    street: str
    postal_code: str
    city: str
    salesperson: str
    platform: str
    features: tuple[str, ...]
    # Upkeep: the preferred official workshop, and the standing consent's limit per order in
    # minor units (None: off, the customer is asked about every order).
    workshop: str = ""
    auto_limit_minor: int | None = None
    password: str = DEMO_PASSWORD

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    def sale(self) -> dict[str, Any]:
        return {
            "customer": {
                "country": self.country,
                "first_name": self.first_name,
                "last_name": self.last_name,
                "email": self.email,
                "language": self.language,
                "national_id": self.national_id,
                "phone": self.phone,
                "street": self.street,
                "postal_code": self.postal_code,
                "city": self.city,
            },
            "plan": {
                "platform": self.platform,
                "features": list(self.features),
                "service_period_months": 48,
                "maintenance_included": True,
            },
        }


# Streets with a house number: the registries' deterministic rule accepts them (a random
# refusal is corrected by sending again, see `prepare`).
DEMO_CUSTOMERS = (
    DemoCustomer(
        email="ana.garcia@demo.caas.example",
        first_name="Ana",
        last_name="García López",
        country="ES",
        language="es",
        national_id="48291736Q",
        phone="+34 612 345 678",
        street="Calle Mayor 1",
        postal_code="28013",
        city="Madrid",
        salesperson="sales.madrid@caas.example",
        platform="BOREAL",
        features=("driver_assist",),
        workshop="Taller Norte",
        auto_limit_minor=30_000,
    ),
    DemoCustomer(
        email="camille.durand@demo.caas.example",
        first_name="Camille",
        last_name="Durand",
        country="FR",
        language="fr",
        national_id="1 85 05 69 123 045 64",
        phone="+33 6 12 34 56 78",
        street="3 rue de la République",
        postal_code="69003",
        city="Lyon",
        salesperson="sales.lyon@caas.example",
        platform="AURA",
        features=("driver_assist", "entertainment"),
        workshop="Atelier Part-Dieu",
    ),
)


class JourneyError(Exception):
    """The journey cannot go on (an answer the demo did not expect); the message says where."""


@dataclass
class Endpoints:
    """Where the driver talks: the platform, the payment provider and the factory."""

    platform: str
    payments: str
    factory: str


@dataclass
class Progress:
    """Where one customer's order stands, for the progress line."""

    customer: DemoCustomer
    state: str = "starting"
    vin: str | None = None
    registration_attempts: int = 0
    done: bool = False
    steps: list[str] = field(default_factory=list)


ActivationLink = Callable[[str], str | None]


def _ok(response: httpx.Response, *statuses: int) -> Any:
    if response.status_code not in (statuses or (200,)):
        raise JourneyError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response.json() if response.content else None


def _logged_in(base: str, email: str, password: str) -> httpx.Client | None:
    client = httpx.Client(base_url=base, timeout=HTTP_SECONDS)
    answer = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    if answer.status_code == 200:
        return client
    client.close()
    return None


def prepare(
    customer: DemoCustomer,
    endpoints: Endpoints,
    *,
    activation_link: ActivationLink,
    progress: Progress | None = None,
    timeout: float = 300.0,
    poll_seconds: float = 0.2,
) -> str:
    """Drive `customer`'s order to delivered; returns the car's VIN. Safe to call again."""
    progress = progress or Progress(customer)
    dealer = _logged_in(endpoints.platform, customer.salesperson, DEMO_PASSWORD)
    if dealer is None:
        raise JourneyError(f"the salesperson {customer.salesperson} cannot log in")
    with closing(dealer):
        sale = _sale_of(dealer, customer) or _sell(dealer, customer)
        sale_id, number = sale["id"], sale["number"]
        buyer = _activated(customer, endpoints, activation_link, timeout=timeout)
        with closing(buyer):
            paced = False
            deadline = time.monotonic() + timeout
            while True:
                state = _ok(buyer.get(f"/api/v1/sales/{sale_id}"))["state"]
                if state != progress.state:
                    progress.state = state
                    progress.steps.append(state)
                if state == "delivered":
                    break
                if time.monotonic() > deadline:
                    raise JourneyError(f"order {number} still {state} after {timeout:.0f} s")
                if state == "awaiting_deposit":
                    _pay(buyer, endpoints, sale_id, "deposit")
                elif state == "at_dealer":
                    _pay(buyer, endpoints, sale_id, "final")
                elif state == "registration_rejected":
                    _retry_registration(dealer, sale_id, progress)
                elif state in _DELIVERY_STEPS:
                    path, body, status = _DELIVERY_STEPS[state]
                    _ok(
                        dealer.post(
                            f"/api/v1/sales/{sale_id}/{path}",
                            json=body(),
                            headers={"Idempotency-Key": f"demo-{path}-{sale_id}"},
                        ),
                        status,
                    )
                    continue
                elif not paced and state not in ("registering", "cancelled"):
                    paced = _express(endpoints, number)
                elif state == "cancelled":
                    raise JourneyError(f"order {number} was cancelled")
                time.sleep(poll_seconds)
            vin = _vin_of(buyer, sale_id)
            _choose_upkeep(buyer, customer)
    progress.vin, progress.done = vin, True
    return vin


def _choose_upkeep(buyer: httpx.Client, customer: DemoCustomer) -> None:
    """The customer's preferred workshop and standing consent, as they would set them in the
    app; the same choice again changes nothing."""
    places = _ok(buyer.get("/api/v1/upkeep/workshops"))
    chosen = next((w["id"] for w in places if w["name"] == customer.workshop), None)
    body = {
        "auto_order": customer.auto_limit_minor is not None,
        "auto_limit_minor": customer.auto_limit_minor or 0,
        "preferred_workshop_id": chosen,
    }
    _ok(
        buyer.put(
            "/api/v1/upkeep/preferences",
            json=body,
            headers={"Idempotency-Key": f"demo-upkeep-{customer.email}"},
        )
    )


def _sale_of(dealer: httpx.Client, customer: DemoCustomer) -> dict[str, Any] | None:
    """The customer's order at this dealership, if the salesperson sold it already."""
    page = _ok(dealer.get("/api/v1/sales", params={"search": customer.email}))
    for item in page["items"]:
        sale: dict[str, Any] = _ok(dealer.get(f"/api/v1/sales/{item['id']}"))
        if sale["customer"]["email"] == customer.email and sale["state"] != "cancelled":
            return sale
    return None


def _sell(dealer: httpx.Client, customer: DemoCustomer) -> dict[str, Any]:
    sale: dict[str, Any] = _ok(
        dealer.post(
            "/api/v1/sales",
            json=customer.sale(),
            headers={"Idempotency-Key": f"demo-sale-{customer.email}"},
        ),
        201,
    )
    return sale


def _activated(
    customer: DemoCustomer, endpoints: Endpoints, activation_link: ActivationLink, *, timeout: float
) -> httpx.Client:
    """The customer logged in: activated from the e-mail's link the first time."""
    client = _logged_in(endpoints.platform, customer.email, customer.password)
    if client is not None:
        return client
    deadline = time.monotonic() + timeout
    link = activation_link(customer.email)
    while link is None:
        if time.monotonic() > deadline:
            raise JourneyError(f"no activation e-mail for {customer.email}")
        time.sleep(0.2)
        link = activation_link(customer.email)
    token = link.split("token=", 1)[1].split("&", 1)[0]
    with httpx.Client(base_url=endpoints.platform, timeout=HTTP_SECONDS) as anonymous:
        _ok(
            anonymous.post(
                "/api/v1/auth/activate", json={"token": token, "password": customer.password}
            )
        )
    client = _logged_in(endpoints.platform, customer.email, customer.password)
    if client is None:
        raise JourneyError(f"{customer.email} cannot log in after activation")
    return client


def _pay(buyer: httpx.Client, endpoints: Endpoints, sale_id: int, kind: str) -> None:
    """Pay by the sandbox's succeeding card, tokenised as the customer's browser does."""
    card = {"number": CARD_SUCCEEDS, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    token = _ok(httpx.post(f"{endpoints.payments}/v1/tokens", json=card), 201)["id"]
    _ok(
        buyer.post(
            f"/api/v1/sales/{sale_id}/payments",
            json={"kind": kind, "card_token": token},
            headers={"Idempotency-Key": f"demo-{kind}-{sale_id}"},
        ),
        201,
        202,  # the provider answers later (its webhook); the order moves when it does
    )


def _express(endpoints: Endpoints, number: str) -> bool:
    """Ask the factory simulator to build this order at the express pace; False while the
    factory does not know the order yet."""
    answer = httpx.post(
        f"{endpoints.factory}/sim/orders/{number}/pace",
        json={"stage_seconds": EXPRESS_STAGE_SECONDS},
        timeout=HTTP_SECONDS,
    )
    if answer.status_code == 404:
        return False
    _ok(answer)
    return True


def _retry_registration(dealer: httpx.Client, sale_id: int, progress: Progress) -> None:
    """The registry refused: the dealer sends it again (the demo's data is right)."""
    progress.registration_attempts += 1
    if progress.registration_attempts > REGISTRATION_ATTEMPTS:
        raise JourneyError(f"registration refused {REGISTRATION_ATTEMPTS} times")
    _ok(
        dealer.post(
            f"/api/v1/sales/{sale_id}/registration/retry",
            headers={
                "Idempotency-Key": f"demo-registration-{sale_id}-{progress.registration_attempts}"
            },
        ),
        202,
        409,  # already sent again meanwhile
    )


def _today() -> dict[str, str]:
    return {"scheduled_for": datetime.now(UTC).date().isoformat(), "carrier": CARRIER}


_DELIVERY_STEPS: dict[str, tuple[str, Callable[[], dict[str, str]], int]] = {
    "registered": ("delivery", _today, 201),
    "delivery_scheduled": ("delivery/dispatch", dict, 200),
    "in_transit": ("delivery/complete", dict, 200),
}


def _vin_of(buyer: httpx.Client, sale_id: int) -> str:
    file = _ok(buyer.get("/api/v1/me/file"))
    for purchase in file["purchases"]:
        if purchase["id"] == sale_id and purchase["vin"]:
            return str(purchase["vin"])
    raise JourneyError(f"order {sale_id} is delivered but the customer's file has no VIN")


def delivered_cars(session: Session) -> dict[str, str]:
    """The ready customers whose car is delivered already: e-mail -> VIN (a read only)."""
    rows = session.execute(
        select(Customer.email, Vehicle.vin)
        .join(Vehicle, Vehicle.owner_customer_id == Customer.id)
        .where(
            Customer.email.in_([customer.email for customer in DEMO_CUSTOMERS]),
            Vehicle.delivered_at.is_not(None),
        )
    ).all()
    return dict(rows)


def customer_logins(delivered: dict[str, str]) -> list[DemoLogin]:
    """The ready customers as rows of the logins table."""
    return [
        DemoLogin(
            "customer",
            customer.email,
            customer.password,
            f"{customer.name} ({customer.country}), car delivered: {delivered[customer.email]}"
            if customer.email in delivered
            else f"{customer.name} ({customer.country}), car on its way (progress below)",
        )
        for customer in DEMO_CUSTOMERS
    ]
