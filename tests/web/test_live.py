"""Live status pushed to the customer's page: server-sent events of a purchase's activation and
of the car's state, woken by PostgreSQL's NOTIFY at the commit of a real change; only the
owner may listen."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.app import create_app
from caas.core.clock import FixedClock, SystemClock
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.ota.models import ConfigurationVersion
from caas.protocol.payments import CARD_SUCCEEDS
from caas.seed import DEMO_PASSWORD
from caas.store.models import Purchase
from caas.web import live
from tests.billing.conftest import PaymentSandbox, payment_sandbox, settings
from tests.files.customers import sold_customer
from tests.servers import serving
from tests.store.conftest import Owner, answer, buy, item, offer, owner_of
from tests.store.engine import engine_keys, signing
from tests.vehicles.support import CommittedDatabase, born_car, committed, deliver
from tests.web.support import log_in

__all__ = ["committed", "engine_keys", "payment_sandbox", "settings", "signing"]

# Far longer than the test waits: a new status arrives only because NOTIFY woke the stream.
NO_RECHECK = 60.0
WAIT_SECONDS = 8.0


def _events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) of each event of an SSE stream, comments (heartbeats) left out."""
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                yield name, data
            name, data = "message", ""
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data += line.removeprefix("data:").strip()


def _next_status(events: Iterator[tuple[str, str]]) -> dict[str, object]:
    name, data = next(events)
    assert name == "status", (name, data)
    found: dict[str, object] = json.loads(data)
    return found


def _logged_in(url: str, email: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=WAIT_SECONDS)
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    answered = client.post(
        "/login",
        data={"csrf_token": token.group(1), "email": email, "password": DEMO_PASSWORD},
    )
    assert answered.status_code in (200, 303), answered.text
    return client


def test_the_purchase_and_the_car_are_pushed_to_the_page_when_the_car_applies_the_option(
    committed: CommittedDatabase,
    settings: Settings,
    payment_sandbox: PaymentSandbox,
    signing: SigningMaterial,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "RECHECK_SECONDS", NO_RECHECK)
    now = datetime.now(UTC)
    clock = FixedClock(now)
    car = committed.run(lambda session: born_car(session, settings=settings, now=now))
    committed.run(lambda session: deliver(session, car, now=now))

    def bought(session: Session) -> tuple[Owner, int, int]:
        owner = owner_of(session, car, now)
        window = offer(session, owner.vehicle, "power_boost", "window", "1D")
        purchase = buy(
            session,
            owner,
            [item(window)],
            token=payment_sandbox.token(CARD_SUCCEEDS),
            key="live-1",
            settings=settings,
            clock=clock,
        )
        version = session.scalar(
            select(func.max(ConfigurationVersion.version)).where(
                ConfigurationVersion.vehicle_id == owner.vehicle.id
            )
        )
        assert version is not None
        return owner, purchase.id, version

    owner, purchase_id, version = committed.run(bought)
    app = create_app(settings=settings, sessions=committed.sessions, clock=SystemClock())

    with serving(app) as server, closing(_logged_in(server.url, owner.user.email)) as client:
        purchase_url = f"/portal/cars/{car.vin}/purchases/{purchase_id}/events"
        car_url = f"/portal/cars/{car.vin}/events"
        with client.stream("GET", purchase_url) as purchase, client.stream("GET", car_url) as cars:
            assert purchase.headers["content-type"].startswith("text/event-stream")
            purchase_events, car_events = _events(purchase), _events(cars)
            first = _next_status(purchase_events)
            assert (first["phase"], first["final"]) == ("delivering", False)
            before = _next_status(car_events)
            assert before["pending_version"] == version
            assert "power_boost" not in before["active_features"]  # type: ignore[operator]

            # The car applies it: committed by another connection, as the MQTT bridge does.
            committed.run(lambda session: answer(session, owner, version, "applied", clock))

            applied = _next_status(purchase_events)
            assert applied["phase"] == "applied"
            assert applied["steps"] == [
                {"key": "paid", "status": "done"},
                {"key": "delivering", "status": "done"},
                {"key": "applying", "status": "done"},
                {"key": "active", "status": "current"},
            ]
            after = _next_status(car_events)
            assert (after["applied_version"], after["pending_version"]) == (version, None)

    def state(session: Session) -> str:
        return session.get_one(Purchase, purchase_id).state

    assert committed.run(state) == "delivering"  # capture waits for the worker: not pushed yet


def test_only_the_owner_may_listen(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    signing: SigningMaterial,
) -> None:
    car = born_car(db, settings=settings, now=clock.now())
    deliver(db, car, now=clock.now())
    owner = owner_of(db, car, clock.now())
    sale_id = car.sale_id
    stranger = sold_customer(db, settings=settings, now=clock.now())
    db.commit()

    log_in(app_client, stranger.email)
    for path in (
        f"/portal/cars/{car.vin}/events",
        f"/portal/cars/{car.vin}/live",
        f"/portal/cars/{car.vin}/purchases/1/events",
        f"/portal/orders/{sale_id}/events",
    ):
        assert app_client.get(path).status_code == 404, path

    log_in(app_client, owner.user.email)
    status = app_client.get(f"/portal/cars/{car.vin}/live").json()
    assert (status["vin"], status["state"], status["final"]) == (car.vin, "in_service", False)

    app_client.cookies.clear()
    assert app_client.get(f"/portal/cars/{car.vin}/events").status_code == 401
