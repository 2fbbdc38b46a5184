"""The payment sandbox served over HTTP, a webhook inbox standing in for the platform's
endpoint, and customers with an order waiting for their money."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.protocol.payments import API_KEY_HEADER, Event, Settlement
from caas.protocol.webhooks import SIGNATURE_HEADER
from caas.sales import service as sales
from caas.sales.models import Customer, Sale
from caas.sales.schemas import CommercialPlan, CustomerIdentity
from caas.seed import DEMO_PASSWORD
from caas_sim.payments import Sandbox, create_app
from tests.conftest import SmtpInbox
from tests.factories import customer_payload, salesperson
from tests.servers import ServerThread, serving, wait_until

API_KEY = "test-payment-api-key"
WEBHOOK_SECRET = "test-payment-webhook-secret"
# The platform gives up on the provider after this long; the late test card answers later.
PLATFORM_TIMEOUT = 2.0
LATE_SECONDS = 4.0


@dataclass
class ReceivedEvent:
    body: bytes
    signature: str | None

    @property
    def event(self) -> Event:
        return Event.model_validate_json(self.body)


@dataclass
class EventInbox:
    """Keeps every event the sandbox sends, to hand them to the platform when a test says."""

    received: list[ReceivedEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/events")
        async def receive(request: Request) -> Response:
            with self._lock:
                self.received.append(
                    ReceivedEvent(await request.body(), request.headers.get(SIGNATURE_HEADER))
                )
            return Response(status_code=204)

        return app

    def for_reference(self, reference: str) -> list[ReceivedEvent]:
        with self._lock:
            return [r for r in self.received if r.event.authorization.reference == reference]

    def wait_for(self, reference: str, kind: str) -> ReceivedEvent:
        wait_until(lambda: any(r.event.type == kind for r in self.for_reference(reference)))
        return next(r for r in self.for_reference(reference) if r.event.type == kind)


@dataclass
class PaymentSandbox:
    server: ServerThread
    sandbox: Sandbox
    inbox: EventInbox

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, number: str) -> str:
        """Tokenise a card as the customer's browser would: straight at the provider."""
        response = httpx.post(
            f"{self.url}/v1/tokens",
            json={"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"},
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["id"]
        return token

    def settlements(self, reference: str) -> list[Settlement]:
        response = httpx.get(f"{self.url}/v1/settlements", headers={API_KEY_HEADER: API_KEY})
        assert response.status_code == 200, response.text
        return [
            s
            for s in (Settlement.model_validate(item) for item in response.json())
            if s.reference == reference
        ]

    def captures(self, reference: str) -> int:
        return sum(1 for s in self.settlements(reference) if s.kind == "capture")

    def authorisations(self, reference: str) -> int:
        return sum(1 for a in self.sandbox.authorizations.values() if a.reference == reference)


@pytest.fixture(scope="session")
def payment_sandbox() -> Iterator[PaymentSandbox]:
    inbox = EventInbox()
    with serving(inbox.app()) as inbox_server:
        app = create_app(
            api_key=API_KEY,
            webhook_url=f"{inbox_server.url}/events",
            webhook_secret=WEBHOOK_SECRET,
            late_seconds=LATE_SECONDS,
        )
        with serving(app) as server:
            yield PaymentSandbox(server=server, sandbox=app.state.sandbox, inbox=inbox)


@pytest.fixture
def settings(smtp: SmtpInbox, payment_sandbox: PaymentSandbox) -> Settings:
    return Settings(
        env="test",
        database_url="postgresql+psycopg://unused/unused",
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        public_url="http://testserver",
        payment_url=payment_sandbox.url,
        payment_api_key=API_KEY,
        payment_webhook_secret=WEBHOOK_SECRET,
        payment_timeout_seconds=PLATFORM_TIMEOUT,
    )


@dataclass(frozen=True)
class Buyer:
    customer: Customer
    user: User
    sale: Sale


def buyer(db: Session, settings: Settings, clock: FixedClock, country: str = "ES") -> Buyer:
    """A customer whose order awaits the deposit, able to log in with the demo password."""
    sale = sales.create_sale(
        db,
        salesperson=salesperson(db, country),
        identity=CustomerIdentity(**customer_payload(country)),
        plan=CommercialPlan(
            platform="AURA",
            features=["driver_assist"],
            service_period_months=48,
            maintenance_included=True,
        ),
        settings=settings,
        now=clock.now(),
    )
    customer = db.get_one(Customer, sale.customer_id)
    user = db.get_one(User, customer.user_id)
    user.password_hash = hash_password(DEMO_PASSWORD)
    user.activated_at = clock.now()
    db.commit()
    return Buyer(customer=customer, user=user, sale=sale)


def login(client: TestClient, email: str) -> None:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text


def pay(client: TestClient, sale_id: int, kind: str, token: str, key: str) -> httpx.Response:
    return client.post(
        f"/api/v1/sales/{sale_id}/payments",
        json={"kind": kind, "card_token": token},
        headers={"Idempotency-Key": key},
    )


def deliver(client: TestClient, received: ReceivedEvent) -> dict[str, Any]:
    """Hand one event to the platform exactly as the sandbox sent it."""
    headers = {"Content-Type": "application/json"}
    if received.signature is not None:
        headers[SIGNATURE_HEADER] = received.signature
    response = client.post("/api/v1/webhooks/payments", content=received.body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer
