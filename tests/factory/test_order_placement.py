"""The deposit places the order with the factory: over HTTP, once, whatever the factory does."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.history import subject_history
from caas.core.outbox import OutboxMessage
from caas.core.settings import Settings
from caas.factory.service import PLACE_ORDER_TOPIC, place_factory_order
from caas.protocol.factory import API_KEY_HEADER, ORDERS_PATH
from caas.sales.models import Sale
from caas.seed import DEMO_PASSWORD
from caas.worker import build_relay
from tests.factory.conftest import FACTORY_API_KEY, FactorySim, deposited_sale


def order_message(session: Session, sale: Sale) -> OutboxMessage:
    session.expire_all()
    return session.scalars(
        select(OutboxMessage).where(
            OutboxMessage.topic == PLACE_ORDER_TOPIC,
            OutboxMessage.dedupe_key == f"factory.order:{sale.id}",
        )
    ).one()


def test_deposit_places_the_order_with_the_factory_over_http(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    factory_sim: FactorySim,
) -> None:
    sale = deposited_sale(db, settings, clock)
    assert sale.state == "waiting_for_factory"
    assert factory_sim.orders() == []  # nothing leaves before the relay, after commit

    build_relay(settings, sessions, clock).run_once()

    db.refresh(sale)
    assert sale.state == "ordered"
    (order,) = factory_sim.orders()
    assert order["order_id"] == sale.number
    assert sale.factory_order_ref == order["factory_reference"]
    received = factory_sim.received_order(sale.number)
    assert received["platform"] == "AURA"
    assert received["hardware_features"] == ["driver_assist"]
    assert received["software_version"] == "7.2.0"
    assert received["destination"]["dealership_code"] == "MAD01"
    assert received["destination"]["city"] == "Madrid"
    assert received["callback"]["url"] == "http://testserver/api/v1/factory/events"
    ordered = subject_history(db, "order", sale.id)[-1]
    assert (ordered.event, ordered.actor_kind) == ("order.ordered", "factory")
    assert ordered.details["factory_reference"] == sale.factory_order_ref


def test_order_waits_while_the_factory_is_down_then_goes_through_once(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    factory_sim: FactorySim,
    app_client: TestClient,
) -> None:
    factory_sim.outage(True)
    sale = deposited_sale(db, settings, clock)
    relay = build_relay(settings, sessions, clock)

    relay.run_once()
    message = order_message(db, sale)
    assert message.attempts == 1
    assert message.done_at is None
    assert "503" in (message.last_error or "")

    relay.run_once()  # not due yet: the backoff is respected
    assert order_message(db, sale).attempts == 1
    clock.advance(relay.backoff(1) + timedelta(seconds=1))
    relay.run_once()
    assert order_message(db, sale).attempts == 2

    # Meanwhile the dealer and the customer read "waiting for the factory".
    app_client.post(
        "/api/v1/auth/login",
        json={"email": "sales.madrid@caas.example", "password": DEMO_PASSWORD},
    )
    shown = app_client.get(f"/api/v1/sales/{sale.id}").json()
    assert (shown["state"], shown["state_label"]) == (
        "waiting_for_factory",
        "Waiting for the factory",
    )

    factory_sim.outage(False)
    relay.run_once()  # the factory is back, but the retry is not due yet
    assert order_message(db, sale).attempts == 2
    clock.advance(relay.backoff(2) + timedelta(seconds=1))
    relay.run_once()

    message = order_message(db, sale)
    assert message.done_at is not None
    assert message.attempts == 3
    db.refresh(sale)
    assert sale.state == "ordered"
    assert [order["order_id"] for order in factory_sim.orders()] == [sale.number]


def test_lost_acknowledgement_does_not_place_the_order_twice(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    factory_sim: FactorySim,
) -> None:
    sale = deposited_sale(db, settings, clock)
    # A first attempt reached the factory, but its answer never came back.
    order = {
        **order_message(db, sale).payload["order"],
        "callback": {"url": "http://testserver/api/v1/factory/events"},
    }
    first = httpx.post(
        factory_sim.url + ORDERS_PATH,
        json=order,
        headers={API_KEY_HEADER: FACTORY_API_KEY, "Idempotency-Key": sale.number},
    )
    assert first.status_code == 201

    build_relay(settings, sessions, clock).run_once()

    db.refresh(sale)
    assert sale.state == "ordered"
    assert sale.factory_order_ref == first.json()["factory_reference"]
    assert len(factory_sim.orders()) == 1


def test_placing_the_same_sale_twice_queues_one_order(
    db: Session, settings: Settings, clock: FixedClock, factory_sim: FactorySim
) -> None:
    sale = deposited_sale(db, settings, clock)
    place_factory_order(db, sale, now=clock.now())
    db.commit()
    assert order_message(db, sale).attempts == 0  # still the one message


def test_refused_order_is_kept_and_retried_with_the_error_recorded(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    factory_sim: FactorySim,
) -> None:
    sale = deposited_sale(db, settings, clock)
    wrong_key = settings.model_copy(update={"factory_api_key": "not-the-key"})
    relay = build_relay(wrong_key, sessions, clock)
    relay.run_once()

    message = order_message(db, sale)
    assert message.attempts == 1
    assert "401" in (message.last_error or "")
    assert message.gave_up_at is None
    db.refresh(sale)
    assert sale.state == "waiting_for_factory"
    assert factory_sim.orders() == []

    # Once the key is fixed, the next attempt goes through.
    clock.advance(relay.backoff(1) + timedelta(seconds=1))
    build_relay(settings, sessions, clock).run_once()
    db.refresh(sale)
    assert sale.state == "ordered"
