"""Schemathesis over the whole OpenAPI document of `caas.app`, in process (ASGI), as the users who
call each route: a customer with a delivered car (and a saved card, a phone key, a purchase, a
subscription, an invoice, a service order, a notification), a salesperson of the car's
dealership, the workshop and the operator (with a release and its rollout), each with a bearer
token; routes without security run anonymous.

Every operation gets a handful of generated requests, half of them aimed at the world's real
objects (the path parameters replaced by the customer's VIN, sale, invoice...), the others with
generated path parameters, plus a few invalid ones (schemathesis' negative mode). Each answer must
pass schemathesis' checks: no server error, a status code the document declares, that status'
content type and a body that matches its schema.

Generation is derandomized, so a run repeats the previous one. Each request runs inside a
savepoint of the module's outer transaction that is rolled back after it, so a successful command
(a scrapped car, an erased customer) never changes what the next request finds.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.models import User
from caas.accounts.service import issue_api_token
from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.notifications.service import notify_user
from caas.ota.keys import ensure_demo_keys
from caas.ota.service import use_signing_material
from caas.sales.models import Sale
from caas.store.models import Entitlement
from caas.upkeep import orders as upkeep_orders
from tests.billing.conftest import API_KEY, WEBHOOK_SECRET, PaymentSandbox, payment_sandbox
from tests.conftest import SmtpInbox
from tests.security.authz_world import customers_belongings
from tests.store.conftest import delivered_owner

__all__ = ["payment_sandbox"]  # the fixture, served for this module

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Generated requests per operation: valid ones with the world's objects, valid ones with
# generated path parameters, and invalid ones (negative mode) with the world's objects.
EXAMPLES_PER_OPERATION = 5
METHODS = ("get", "post", "put", "patch", "delete")

# Who calls a route that needs a login: the first pattern that matches `METHOD path` wins; the
# rest is the customer's. Routes without security in the document run anonymous.
ROLES: tuple[tuple[str, str], ...] = (
    (r"^POST /api/v1/vehicles/\{vin\}/services$", "workshop"),
    (r"^POST /api/v1/upkeep/orders/\{order_id\}/(parts-reserved|done)$", "workshop"),
    (r"^\w+ /api/v1/upkeep/workshop/", "workshop"),
    (r"^\w+ /api/v1/sales/\{sale_id\}/payments$", "customer"),
    (r"^\w+ /api/v1/(quotes|sales|resales)\b", "salesperson"),
    (r"^\w+ /api/v1/(fleet|finance|software|product-improvement)\b", "operator"),
    (r"^\w+ /api/v1/upkeep/thresholds/", "operator"),
    (r"^\w+ /api/v1/customers/\{customer_id\}/file$", "operator"),
    (r"^POST /api/v1/vehicles/\{vin\}/(scrap|registry/retry)$", "operator"),
    (r"^(POST|PATCH) /api/v1/(platforms|offers)/", "operator"),
)


def _document() -> dict[str, Any]:
    """The OpenAPI document as the application serves it (no database needed to build it)."""
    return create_app(settings=Settings(env="test"), sessions=sessionmaker()).openapi()


DOCUMENT = _document()
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, item_ in DOCUMENT["paths"].items()
    for method in item_
    if method in METHODS
]


def role_for(operation: str) -> str | None:
    """The user who calls `operation`, or None when the route needs no login."""
    method, path = operation.split(" ", 1)
    if not DOCUMENT["paths"][path][method.lower()].get("security"):
        return None
    for pattern, role in ROLES:
        if re.search(pattern, operation):
            return role
    return "customer"


@dataclass
class FuzzWorld:
    """The application over the module's connection, the users' tokens and the real objects by
    path-parameter name."""

    app: FastAPI
    connection: Connection
    tokens: dict[str, str]
    params: dict[str, Any]


@pytest.fixture(scope="module")
def fuzz_world(
    engine: Engine,
    smtp_server: SmtpInbox,
    payment_sandbox: PaymentSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FuzzWorld]:
    """Build the world once, in an outer transaction rolled back at the end of the module."""
    data_dir = tmp_path_factory.mktemp("fuzz")
    use_signing_material(ensure_demo_keys(data_dir / "keys"))
    settings = Settings(
        env="test",
        database_url="postgresql+psycopg://unused/unused",
        smtp_url=f"smtp://127.0.0.1:{smtp_server.port}",
        public_url="http://testserver",
        payment_url=payment_sandbox.url,
        payment_api_key=API_KEY,
        payment_webhook_secret=WEBHOOK_SECRET,
        data_dir=data_dir,
    )
    clock = FixedClock()
    with engine.connect() as connection:
        outer = connection.begin()
        sessions = sessionmaker(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        app = create_app(settings=settings, sessions=sessions, clock=clock)
        try:
            with TestClient(app) as client:
                tokens, params = _build(client, sessions, settings, clock, payment_sandbox)
            yield FuzzWorld(app=app, connection=connection, tokens=tokens, params=params)
        finally:
            outer.rollback()
            use_signing_material(None)


def _staff(session: Session, email: str) -> User:
    return session.scalars(select(User).where(User.email == email)).one()


def _build(
    client: TestClient,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    sandbox: PaymentSandbox,
) -> tuple[dict[str, str], dict[str, Any]]:
    """The users' tokens and the customer's and operator's objects, made through the services
    and the API as their owners would."""
    now = clock.now()
    with sessions() as db:
        owner = delivered_owner(db, settings, clock)
        db.get_one(Sale, owner.car.sale_id).state = "delivered"  # the order says so too
        salesperson = db.scalars(
            select(User)
            .join(Sale, Sale.salesperson_id == User.id)
            .where(Sale.id == owner.car.sale_id)
        ).one()
        users = {
            "customer": owner.user,
            "salesperson": salesperson,
            "workshop": _staff(db, "workshop@caas.example"),
            "operator": _staff(db, "operator@caas.example"),
        }
        tokens = {
            role: issue_api_token(db, user=user, name="schemathesis", now=now)
            for role, user in users.items()
        }
        db.commit()

        def as_(role: str) -> dict[str, str]:
            return {
                "Authorization": f"Bearer {tokens[role]}",
                "Idempotency-Key": secrets.token_hex(8),
            }

        vin = owner.vehicle.vin
        card = sandbox.token("4242424242424242")
        belongings = customers_belongings(
            client,
            db,
            owner,
            card=card,
            headers=lambda: as_("customer"),
            settings=settings,
            clock=clock,
            now=now,
            key="fuzz-buy",
        )
        entitlement = db.scalars(
            select(Entitlement).where(
                Entitlement.vehicle_id == owner.vehicle.id, Entitlement.source == "plan"
            )
        ).first()
        assert entitlement is not None
        order = upkeep_orders.propose(
            db,
            vehicle_id=owner.vehicle.id,
            need="washer_fluid",
            detail={},
            actor=Actor(kind="system", label="schemathesis"),
            now=now,
        )
        assert order is not None
        notify_user(
            db,
            user_id=owner.user.id,
            email=owner.user.email,
            language="en",
            kind="order.shipped",
            context={
                "name": owner.customer.first_name,
                "order_number": owner.car.sale_id,
                "model": "Aura",
                "dealership": "Madrid Centro",
                "dealership_city": "Madrid",
            },
            dedupe_key=f"fuzz:{owner.user.id}",
            now=now,
        )
        db.commit()
        notification = db.scalars(
            select(Notification).where(Notification.user_id == owner.user.id)
        ).first()
        assert notification is not None

        release = client.post(
            "/api/v1/software/releases",
            data={"platform": "AURA", "version": "9.9.1", "models": "AURA"},
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

        params: dict[str, Any] = {
            "vin": vin,
            "sale_id": owner.car.sale_id,
            "customer_id": owner.customer.id,
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
    return tokens, params


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_world: FuzzWorld) -> Any:
    """The document loaded by schemathesis from the running application."""
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_world.app)


_keys = itertools.count(1)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_operation_answers_within_its_schema(
    operation: str, fuzz_world: FuzzWorld, fuzz_schema: Any
) -> None:
    """No server error and no answer outside the document, for valid and invalid requests."""
    method, path = operation.split(" ", 1)
    api_operation = fuzz_schema[path][method]
    names = re.findall(r"\{(\w+)\}", path)
    known = {name: fuzz_world.params[name] for name in names if name in fuzz_world.params}
    strategies = [api_operation.as_strategy(path_parameters=known or None)]
    if names:
        strategies.append(api_operation.as_strategy())
    strategies.append(
        api_operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=known or None)
    )
    role = role_for(operation)
    token = fuzz_world.tokens[role] if role else None

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=st.one_of(strategies))
    def run(case: Any) -> None:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        if not any(name.lower() == "idempotency-key" for name in case.headers or {}):
            headers["Idempotency-Key"] = f"fuzz-{next(_keys)}"
        savepoint = fuzz_world.connection.begin_nested()
        try:
            case.call_and_validate(headers=headers, checks=CHECKS)
        finally:
            savepoint.rollback()

    run()
