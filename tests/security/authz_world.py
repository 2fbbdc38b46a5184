"""The world the authorisation matrix probes: customer A with everything a customer can own
(a delivered car, its order, invoice, saved card, purchase, subscription, schedule, phone key,
transfer, service order, notifications, an option), customer B with a car of their own, a
salesperson of A's dealership and one of another, a mechanic of the workshop A's service order
is booked at and one of another workshop, and the operator, each with a bearer token; plus the
operator's objects (a release, and its running rollout that offers it to A's car).

Everything is built once per module in one outer transaction on one connection, which is
rolled back at the end; each probe runs inside a savepoint of its own that is rolled back too,
so a command that succeeds (a cancelled subscription, a deleted card) never changes what the
next probe finds.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.models import Dealership, Role, User
from caas.accounts.service import create_user, issue_api_token
from caas.billing import invoices
from caas.billing.rules import LineDraft
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.delivery.models import Delivery
from caas.notifications.models import Notification
from caas.registration.models import Registration
from caas.releases.models import Rollout, RolloutTarget
from caas.releases.service import image_token
from caas.sales.models import Customer, Sale
from caas.seed import DEMO_PASSWORD
from caas.store.models import Entitlement
from caas.upkeep import orders as upkeep_orders
from caas.upkeep.models import Workshop, WorkshopStaff
from tests.billing.conftest import PaymentSandbox
from tests.store.conftest import Owner, buy, delivered_owner, item, offer, subscribed

# A P-256 public key (SubjectPublicKeyInfo, base64), as a phone app sends it.
PHONE_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEliQ9+IcQEgFfe6u7q1kwdx5EpC70Q+K+hqfJ14CzIBeFEV1ng2g+"
    "tr2yFKLm/L2sc5ulLGJNOR4x98iU+NIhSg=="
)

PRINCIPALS = (
    "anonymous",
    "customer_a",
    "customer_b",
    "dealer_a",
    "dealer_b",
    "workshop_a",
    "workshop_b",
    "operator",
)
# Who may see A's data at all: A, the salesperson who sold to A, the workshop A's service order
# is booked at, and the maker's operator. The others never see anything of A's.
STRANGERS = frozenset({"anonymous", "customer_b", "dealer_b", "workshop_b"})


@dataclass
class World:
    """A's objects by path-parameter name, the principals' bearer tokens, and what must never
    reach anyone not entitled to A's data."""

    client: TestClient
    connection: Connection
    sessions: sessionmaker[Session]
    params: dict[str, Any]
    tokens: dict[str, str]
    owner_a: Owner
    owner_b: Owner
    card_token: str  # A's card at the provider
    card_token_b: str  # B's
    transfer_code: str
    car_tokens: dict[str, str]  # a car's token for the release image, by "car_a" / "car_b"
    # Strings that identify A (VIN, e-mail, national id, name) and A's ids by JSON key.
    a_strings: list[str] = field(default_factory=list)
    a_ids: dict[str, set[int]] = field(default_factory=dict)

    def headers(self, principal: str) -> dict[str, str]:
        token = self.tokens.get(principal)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def call(
        self,
        principal: str,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: dict[str, str] | None = None,
        files: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One request as `principal`, in a savepoint rolled back afterwards."""
        savepoint = self.connection.begin_nested()
        try:
            return self.client.request(
                method,
                url,
                json=json,
                data=data,
                files=files,
                params=params,
                headers={**self.headers(principal), "Idempotency-Key": secrets.token_hex(8)},
            )
        finally:
            savepoint.rollback()


def _token(session: Session, user: User, now: Any) -> str:
    return issue_api_token(session, user=user, name="authz matrix", now=now)


def _staff(session: Session, email: str) -> User:
    return session.scalars(select(User).where(User.email == email)).one()


def build_world(
    *,
    client: TestClient,
    connection: Connection,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    sandbox: PaymentSandbox,
) -> World:
    """Build every object of A (and B's car) through the services and the API, committed to
    the module's outer transaction."""
    db = sessions()
    now = clock.now()
    owner_a = delivered_owner(db, settings, clock)
    owner_b = delivered_owner(db, settings, clock)
    card = sandbox.token("4242424242424242")
    card_b = sandbox.token("4242424242424242")
    for owner in (owner_a, owner_b):
        db.get_one(Sale, owner.car.sale_id).state = "delivered"

    dealer_a = db.scalars(
        select(User)
        .join(Sale, Sale.salesperson_id == User.id)
        .where(Sale.id == owner_a.car.sale_id)
    ).one()
    other_dealership = db.scalars(
        select(Dealership).where(Dealership.id != dealer_a.dealership_id).order_by(Dealership.id)
    ).first()
    assert other_dealership is not None
    dealer_b = create_user(
        db,
        email=f"seller-b-{secrets.token_hex(3)}@caas.example",
        full_name="Bea Other-Dealership",
        role=Role.DEALER,
        dealership_id=other_dealership.id,
        password=DEMO_PASSWORD,
        now=now,
    )
    users = {
        "customer_a": owner_a.user,
        "customer_b": owner_b.user,
        "dealer_a": dealer_a,
        "dealer_b": dealer_b,
        "operator": _staff(db, "operator@caas.example"),
    }
    tokens = {name: _token(db, user, now) for name, user in users.items()}
    db.commit()

    def as_(principal: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {tokens[principal]}",
            "Idempotency-Key": secrets.token_hex(8),
        }

    vin = owner_a.vehicle.vin
    belongings = customers_belongings(
        client,
        db,
        owner_a,
        card=card,
        headers=lambda: as_("customer_a"),
        settings=settings,
        clock=clock,
        now=now,
        key="authz-buy",
    )
    # The order's registration (rejected, so its dealer may send it again) and its delivery.
    db.add(
        Registration(
            sale_id=owner_a.car.sale_id,
            country="ES",
            state="rejected",
            rejection_reason="the registry refused the address",
            created_at=now,
            submitted_at=now,
            rejected_at=now,
            updated_at=now,
        )
    )
    db.add(
        Delivery(
            sale_id=owner_a.car.sale_id,
            state="delivered",
            scheduled_for=now.date(),
            carrier="TransAuto Iberia",
            recipient=f"{owner_a.customer.first_name} {owner_a.customer.last_name}",
            street=owner_a.customer.street,
            postal_code=owner_a.customer.postal_code,
            city=owner_a.customer.city,
            country="ES",
            created_at=now,
            scheduled_at=now,
            delivered_at=now,
            updated_at=now,
        )
    )
    entitlement = db.scalars(
        select(Entitlement).where(
            Entitlement.vehicle_id == owner_a.vehicle.id, Entitlement.source == "plan"
        )
    ).first()
    assert entitlement is not None
    order = upkeep_orders.propose(
        db,
        vehicle_id=owner_a.vehicle.id,
        need="washer_fluid",
        detail={},
        actor=Actor(kind="system", label="authz"),
        now=now,
    )
    assert order is not None and order.workshop_id is not None
    other_workshop = db.scalars(
        select(Workshop).where(Workshop.id != order.workshop_id).order_by(Workshop.id)
    ).first()
    assert other_workshop is not None
    for principal, place in (("workshop_a", order.workshop_id), ("workshop_b", other_workshop.id)):
        user = create_user(
            db,
            email=f"{principal}-{secrets.token_hex(3)}@caas.example",
            full_name=f"Mechanic {principal}",
            role=Role.WORKSHOP,
            password=DEMO_PASSWORD,
            now=now,
        )
        db.add(WorkshopStaff(user_id=user.id, workshop_id=place))
        tokens[principal] = _token(db, user, now)
    db.commit()
    notification = db.scalars(
        select(Notification).where(Notification.user_id == owner_a.user.id)
    ).first()
    assert notification is not None

    # The transfer's code, which only A is shown.
    transfer = client.post(f"/api/v1/vehicles/{vin}/transfer", headers=as_("customer_a"))
    assert transfer.status_code == 201, transfer.text

    # The operator's release and a rollout of it.
    release = client.post(
        "/api/v1/software/releases",
        data={"platform": "AURA", "version": "9.9.1", "models": "AURA", "min_version": "99.0.0"},
        files={"image": ("image.bin", secrets.token_bytes(1024))},
        headers=as_("operator"),
    )
    assert release.status_code == 201, release.text
    release_id = release.json()["id"]
    published = client.post(
        f"/api/v1/software/releases/{release_id}/publish", headers=as_("operator")
    )
    assert published.status_code == 200, published.text
    rollout = client.post(
        f"/api/v1/software/releases/{release_id}/rollouts",
        json={"start": False},
        headers=as_("operator"),
    )
    assert rollout.status_code == 201, rollout.text
    # A's car is offered the release in the running rollout: only its own token fetches it.
    running = db.get_one(Rollout, rollout.json()["id"])
    running.state = "running"
    db.add(
        RolloutTarget(
            rollout_id=running.id,
            vehicle_id=owner_a.vehicle.id,
            rank=0,
            wave=1,
            state="offered",
            offered_at=now,
        )
    )
    # A lets the store read their use, so A's suggestions answer.
    consent = client.put(
        "/api/v1/me/consents", json={"tailored_offers": True}, headers=as_("customer_a")
    )
    assert consent.status_code == 200, consent.text

    customer_a = db.get_one(Customer, owner_a.customer.id)
    params: dict[str, Any] = {
        "vin": vin,
        "sale_id": owner_a.car.sale_id,
        "customer_id": owner_a.customer.id,
        **belongings,
        "entitlement_id": entitlement.id,
        "order_id": order.id,
        "notification_id": notification.id,
        "code": "AURA",
        "platform": "AURA",
        "feature_code": "power_boost",
        "release_id": release_id,
        "rollout_id": rollout.json()["id"],
    }
    car_tokens = {
        "car_a": image_token(settings, release_id, vin),
        "car_b": image_token(settings, release_id, owner_b.vehicle.vin),
    }
    world = World(
        client=client,
        connection=connection,
        sessions=sessions,
        params=params,
        tokens=tokens,
        owner_a=owner_a,
        owner_b=owner_b,
        card_token=card,
        card_token_b=card_b,
        transfer_code=transfer.json()["code"],
        car_tokens=car_tokens,
    )
    world.a_strings = [
        vin,
        customer_a.email,
        customer_a.national_id,
        customer_a.last_name,
        PHONE_PUBLIC_KEY[40:80],
    ]
    world.a_ids = {
        "sale_id": {owner_a.car.sale_id},
        "customer_id": {owner_a.customer.id},
        "vehicle_id": {owner_a.vehicle.id},
        "invoice_id": {belongings["invoice_id"]},
        "purchase_id": {belongings["purchase_id"]},
        "subscription_id": {belongings["subscription_id"]},
        "user_id": {owner_a.user.id},
    }
    # The API calls above ran on the same connection, inside this session's savepoint: commit,
    # or closing the session would roll them back.
    db.commit()
    db.close()
    return world


def customers_belongings(
    client: TestClient,
    db: Session,
    owner: Owner,
    *,
    card: str,
    headers: Callable[[], dict[str, str]],
    settings: Settings,
    clock: FixedClock,
    now: datetime,
    key: str,
) -> dict[str, int]:
    """What a customer with a delivered car holds, made as they would make it (over the API
    with `headers()`, or through the store's own services): a saved card, a paired phone, a
    weekly schedule, a purchase authorised at the sandbox, a subscription and an invoice of
    their order. Answered as path parameters by name (and the offers they came from)."""
    vin = owner.vehicle.vin
    method = client.post("/api/v1/me/payment-methods", json={"card_token": card}, headers=headers())
    assert method.status_code == 201, method.text
    phone = client.post(
        f"/api/v1/vehicles/{vin}/phones",
        json={"public_key": PHONE_PUBLIC_KEY, "label": "Ana's phone"},
        headers=headers(),
    )
    assert phone.status_code == 201, phone.text
    custom = offer(db, owner.vehicle, "power_boost", "custom", net_minor=500)
    schedule = client.post(
        f"/api/v1/vehicles/{vin}/schedules",
        json={
            "offer_id": custom.id,
            "recurrence": "weekly",
            "start_date": "2026-03-21",
            "start_time": "08:00",
            "end_date": "2026-03-22",
            "end_time": "22:00",
            "card_token": card,
        },
        headers=headers(),
    )
    assert schedule.status_code == 201, schedule.text
    window = offer(db, owner.vehicle, "power_boost", "window", "1M", net_minor=1_000)
    purchase = buy(db, owner, [item(window)], token=card, key=key, settings=settings, clock=clock)
    monthly = offer(db, owner.vehicle, "power_boost", "subscription", "1M", net_minor=900)
    subscription = subscribed(db, owner, monthly, token=card, clock=clock)
    invoice = invoices.issue(
        db,
        kind="advance",
        customer=owner.customer,
        country="ES",
        lines=[LineDraft("Deposit", 100_000, 2_100, 21_000)],
        now=now,
        sale=db.get_one(Sale, owner.car.sale_id),
    )
    return {
        "invoice_id": invoice.id,
        "method_id": method.json()["id"],
        "key_id": phone.json()["id"],
        "purchase_id": purchase.id,
        "subscription_id": subscription.id,
        "schedule_id": schedule.json()["id"],
        "offer_id": window.id,
        "custom_offer_id": custom.id,
    }
