"""A real factory simulator on a free port, a webhook inbox standing in for the platform's
endpoint, and sales whose deposit is captured."""

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

from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.protocol.webhooks import SIGNATURE_HEADER
from caas.sales.models import Sale
from caas.sales.schemas import CommercialPlan, CustomerIdentity
from caas.sales.service import create_sale, deposit_captured
from caas_sim.factory import create_app
from tests.factories import sale_payload, salesperson
from tests.servers import ServerThread, serving

FACTORY_API_KEY = "test-factory-api-key"
FACTORY_SECRET = "test-factory-webhook-secret"


@dataclass
class ReceivedWebhook:
    body: bytes
    signature: str | None

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.signature is not None:
            headers[SIGNATURE_HEADER] = self.signature
        return headers


@dataclass
class WebhookInbox:
    """An HTTP endpoint that keeps every webhook it gets; it can be told to fail some first."""

    received: list[ReceivedWebhook] = field(default_factory=list)
    fail_next: int = 0
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/events")
        async def receive(request: Request) -> Response:
            webhook = ReceivedWebhook(await request.body(), request.headers.get(SIGNATURE_HEADER))
            with self._lock:
                self.received.append(webhook)
                if self.fail_next > 0:
                    self.fail_next -= 1
                    return Response(status_code=503)
            return Response('{"status":"applied"}', media_type="application/json")

        return app

    def last(self) -> ReceivedWebhook:
        with self._lock:
            return self.received[-1]


@dataclass
class FactorySim:
    """The simulator served over HTTP, with its demo and test controls."""

    server: ServerThread
    app: FastAPI

    @property
    def url(self) -> str:
        return self.server.url

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, self.url + path, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def advance(self, order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/sim/orders/{order_id}/advance")
        return result

    def replay(self, order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/sim/replay/{order_id}")
        return result

    def outage(self, down: bool) -> None:
        self._call("POST", "/sim/outage", json={"down": down})

    def orders(self) -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = self._call("GET", "/sim/orders")
        return orders

    def received_order(self, order_id: str) -> dict[str, Any]:
        """The order exactly as the factory received it."""
        order = self.app.state.floor.get(order_id)
        assert order is not None, f"the factory has no order {order_id}"
        received: dict[str, Any] = order.order.model_dump(mode="json")
        return received


@pytest.fixture
def inbox() -> Iterator[WebhookInbox]:
    receiver = WebhookInbox()
    with serving(receiver.app()) as server:
        receiver.url = f"{server.url}/events"
        yield receiver


@pytest.fixture
def factory_sim(inbox: WebhookInbox) -> Iterator[FactorySim]:
    """The simulator, moved by hand (`advance`); it sends every event to `inbox`."""
    app = create_app(
        webhook_url=inbox.url,
        webhook_secret=FACTORY_SECRET,
        api_key=FACTORY_API_KEY,
        auto_advance=False,
        retry_base_seconds=60,
    )
    with serving(app) as server:
        yield FactorySim(server=server, app=app)


@pytest.fixture
def settings(settings: Settings, factory_sim: FactorySim) -> Settings:
    return settings.model_copy(
        update={
            "factory_url": factory_sim.url,
            "factory_api_key": FACTORY_API_KEY,
            "factory_webhook_secret": FACTORY_SECRET,
        }
    )


def deposited_sale(
    session: Session, settings: Settings, clock: FixedClock, country: str = "ES"
) -> Sale:
    """A sale closed by the country's salesperson whose deposit is captured, committed."""
    payload = sale_payload(country)
    sale = create_sale(
        session,
        salesperson=salesperson(session, country),
        identity=CustomerIdentity(**payload["customer"]),
        plan=CommercialPlan(**payload["plan"]),
        settings=settings,
        now=clock.now(),
    )
    deposit_captured(session, sale, actor=Actor(kind="provider", label="test"), now=clock.now())
    session.commit()
    return sale


def post_webhook(client: TestClient, webhook: ReceivedWebhook) -> httpx.Response:
    """Hand a webhook the simulator sent to the platform, byte for byte."""
    return client.post("/api/v1/factory/events", content=webhook.body, headers=webhook.headers())
