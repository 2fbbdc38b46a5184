"""The factory's stage events move the order, notify the customer and give birth to the car;
duplicates, late, unsigned and forged events change nothing."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.history import HistoryEntry, subject_history
from caas.core.settings import Settings
from caas.factory.models import FactoryEvent
from caas.factory.service import factory_events
from caas.notifications.models import Notification
from caas.protocol import vin as vin_rules
from caas.protocol.factory import STAGES
from caas.protocol.webhooks import SIGNATURE_HEADER, sign
from caas.sales.models import Customer, Sale
from caas.sales.rules import FACTORY_STAGES
from caas.sales.schemas import CommercialPlan, CustomerIdentity
from caas.sales.service import create_sale
from caas.vehicles.service import get_vehicle_by_vin, vehicle_for_sale
from caas.worker import build_relay
from tests.conftest import SmtpInbox
from tests.factories import sale_payload, salesperson
from tests.factory.conftest import (
    FACTORY_SECRET,
    FactorySim,
    ReceivedWebhook,
    WebhookInbox,
    deposited_sale,
    post_webhook,
)


def ordered_sale(
    db: Session, sessions: sessionmaker[Session], settings: Settings, clock: FixedClock
) -> Sale:
    sale = deposited_sale(db, settings, clock)
    build_relay(settings, sessions, clock).run_once()
    db.refresh(sale)
    assert sale.state == "ordered"
    return sale


def next_stage(factory_sim: FactorySim, inbox: WebhookInbox, sale: Sale) -> ReceivedWebhook:
    """The factory moves the order on and sends the event; what reached the wire."""
    delivery = factory_sim.advance(sale.number)
    assert delivery["delivered"] is True
    webhook = inbox.last()
    assert json.loads(webhook.body)["event_id"] == delivery["event"]["event_id"]
    return webhook


def signed(event: dict[str, Any], secret: str = FACTORY_SECRET) -> ReceivedWebhook:
    body = json.dumps(event).encode()
    return ReceivedWebhook(body=body, signature=sign(body, secret))


def event_for(sale: Sale, stage: str, sequence: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "order_id": sale.number,
        "factory_reference": sale.factory_order_ref or "FO-TEST",
        "sequence": sequence,
        "stage": stage,
        "occurred_at": datetime(2026, 3, 1, 10, tzinfo=UTC).isoformat(),
        **extra,
    }


CAR = {
    "vin": "1M8GDM9AXKP042788",
    "public_key": base64.b64encode(bytes(range(32))).decode(),
}


def event_count(db: Session) -> int:
    return db.scalar(select(func.count(FactoryEvent.id))) or 0


def test_stages_walk_the_order_to_the_dealer_notifying_each_and_the_car_is_born(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
    factory_sim: FactorySim,
    inbox: WebhookInbox,
    smtp: SmtpInbox,
) -> None:
    sale = ordered_sale(db, sessions, settings, clock)
    customer = db.get_one(Customer, sale.customer_id)
    for stage in FACTORY_STAGES:
        response = post_webhook(app_client, next_stage(factory_sim, inbox, sale))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "applied"
        db.refresh(sale)
        assert sale.state == stage

    kinds = db.scalars(
        select(Notification.kind).where(Notification.user_id == customer.user_id)
    ).all()
    for stage in FACTORY_STAGES:
        assert f"order.{stage}" in kinds
    assert [event.stage for event in factory_events(db, sale.id)] == list(FACTORY_STAGES)
    assert sale.last_factory_sequence == len(FACTORY_STAGES)

    vehicle = vehicle_for_sale(db, sale.id)
    assert vehicle is not None
    assert vin_rules.is_valid(vehicle.vin)
    assert get_vehicle_by_vin(db, vehicle.vin).id == vehicle.id
    built = factory_sim.orders()[0]
    assert vehicle.vin == built["vin"]
    assert vehicle.owner_customer_id == customer.id
    assert vehicle.software_version == "7.2.0"
    assert len(base64.b64decode(vehicle.public_key)) == 32
    born, configured = subject_history(db, "vehicle", vehicle.id)
    assert (born.event, born.customer_id, born.actor_kind) == ("car.born", customer.id, "factory")
    # On the IoT network from birth: configuration version 1, nothing on yet.
    assert (configured.event, configured.details["version"]) == ("configuration.issued", 1)
    assembly = next(e for e in subject_history(db, "order", sale.id) if e.to_state == "assembly")
    assert assembly.details["vin"] == vehicle.vin

    build_relay(settings, sessions, clock).run_once(limit=100)
    mails = smtp.to(customer.email)
    # activation, waiting for the factory, ordered, then one per stage
    assert len(mails) == 3 + len(FACTORY_STAGES)


def test_duplicate_event_is_acknowledged_and_changes_nothing(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
    factory_sim: FactorySim,
    inbox: WebhookInbox,
) -> None:
    sale = ordered_sale(db, sessions, settings, clock)
    assert post_webhook(app_client, next_stage(factory_sim, inbox, sale)).json()["status"] == (
        "applied"
    )
    history = len(subject_history(db, "order", sale.id))
    notifications = db.scalar(select(func.count(Notification.id)))

    replayed = factory_sim.replay(sale.number)
    assert replayed["event"]["sequence"] == 1
    response = post_webhook(app_client, inbox.last())

    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"
    db.refresh(sale)
    assert sale.state == "accepted"
    assert event_count(db) == 1
    assert len(subject_history(db, "order", sale.id)) == history
    assert db.scalar(select(func.count(Notification.id))) == notifications


def test_older_event_arriving_late_is_ignored(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
    factory_sim: FactorySim,
    inbox: WebhookInbox,
) -> None:
    sale = ordered_sale(db, sessions, settings, clock)
    accepted = next_stage(factory_sim, inbox, sale)
    scheduled = next_stage(factory_sim, inbox, sale)

    assert post_webhook(app_client, scheduled).json()["status"] == "applied"
    late = post_webhook(app_client, accepted)

    assert late.status_code == 200
    assert late.json() == {"status": "ignored", "order_id": sale.number, "sequence": 1}
    db.refresh(sale)
    assert (sale.state, sale.last_factory_sequence) == ("scheduled", 2)
    outcomes = {event.sequence: event.outcome for event in factory_events(db, sale.id)}
    assert outcomes == {1: "ignored", 2: "applied"}
    assert "order.accepted" not in [e.event for e in subject_history(db, "order", sale.id)]


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda hook: ReceivedWebhook(hook.body, None), "factory.signature_missing"),
        (
            lambda hook: ReceivedWebhook(hook.body, sign(hook.body, "someone-else's-secret")),
            "factory.signature_invalid",
        ),
        (
            lambda hook: ReceivedWebhook(
                hook.body.replace(b"accepted", b"shipped"), hook.signature
            ),
            "factory.signature_invalid",
        ),
        (
            lambda hook: ReceivedWebhook(
                hook.body, sign(hook.body, FACTORY_SECRET, timestamp=int(time.time()) - 3600)
            ),
            "factory.signature_invalid",
        ),
    ],
    ids=["unsigned", "wrong-secret", "tampered-body", "stale-signature"],
)
def test_unsigned_or_wrongly_signed_event_is_refused_and_changes_nothing(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
    factory_sim: FactorySim,
    inbox: WebhookInbox,
    tamper: Any,
    code: str,
) -> None:
    sale = ordered_sale(db, sessions, settings, clock)
    history = db.scalar(select(func.count(HistoryEntry.id)))

    response = post_webhook(app_client, tamper(next_stage(factory_sim, inbox, sale)))

    assert response.status_code == 401
    assert response.json()["code"] == code
    db.refresh(sale)
    assert (sale.state, sale.last_factory_sequence) == ("ordered", 0)
    assert event_count(db) == 0
    assert db.scalar(select(func.count(HistoryEntry.id))) == history


def test_stages_may_be_skipped_and_the_car_is_born_with_the_first_event_that_carries_it(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
) -> None:
    sale = ordered_sale(db, sessions, settings, clock)
    response = post_webhook(app_client, signed(event_for(sale, "paint", 4)))
    assert response.json()["status"] == "applied"
    response = post_webhook(app_client, signed(event_for(sale, "quality_check", 6, **CAR)))
    assert response.json()["status"] == "applied"

    db.refresh(sale)
    assert sale.state == "quality_check"
    vehicle = vehicle_for_sale(db, sale.id)
    assert vehicle is not None
    assert vehicle.vin == CAR["vin"]
    assert vehicle.built_at == datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_newer_event_for_a_stage_already_passed_changes_nothing(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
) -> None:
    sale = ordered_sale(db, sessions, settings, clock)
    post_webhook(app_client, signed(event_for(sale, "paint", 4)))
    response = post_webhook(app_client, signed(event_for(sale, "body", 5)))
    assert response.json()["status"] == "ignored"
    db.refresh(sale)
    assert (sale.state, sale.last_factory_sequence) == ("paint", 5)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sequence": 0}, "sequence"),
        ({"stage": "teleported"}, "stage"),
        ({"stage": "assembly", "vin": "1M8GDM9A1KP042788", "public_key": CAR["public_key"]}, "vin"),
        ({"stage": "assembly", "vin": CAR["vin"], "public_key": "c2hvcnQ="}, "public_key"),
        ({"occurred_at": "2026-03-01T10:00:00"}, "occurred_at"),
    ],
    ids=["sequence", "stage", "vin-check-digit", "short-key", "naive-time"],
)
def test_malformed_event_is_422_naming_the_field(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
    change: dict[str, Any],
    field: str,
) -> None:
    sale = ordered_sale(db, sessions, settings, clock)
    response = post_webhook(app_client, signed({**event_for(sale, "accepted", 1), **change}))
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert event_count(db) == 0


def test_production_event_without_the_car_is_422(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    app_client: TestClient,
) -> None:
    sale = ordered_sale(db, sessions, settings, clock)
    response = post_webhook(app_client, signed(event_for(sale, "assembly", 5)))
    assert response.status_code == 422
    assert vehicle_for_sale(db, sale.id) is None


def test_event_for_an_unknown_order_is_404(app_client: TestClient) -> None:
    event = {
        "event_id": str(uuid.uuid4()),
        "order_id": "S1999-999999",
        "factory_reference": "FO-NONE",
        "sequence": 1,
        "stage": "accepted",
        "occurred_at": "2026-03-01T10:00:00Z",
    }
    response = post_webhook(app_client, signed(event))
    assert response.status_code == 404
    assert response.json()["code"] == "factory.order_unknown"


def test_event_for_an_order_not_in_production_is_409(
    db: Session, settings: Settings, clock: FixedClock, app_client: TestClient
) -> None:
    payload = sale_payload()
    sale = create_sale(
        db,
        salesperson=salesperson(db),
        identity=CustomerIdentity(**payload["customer"]),
        plan=CommercialPlan(**payload["plan"]),
        settings=settings,
        now=clock.now(),
    )
    db.commit()
    response = post_webhook(app_client, signed(event_for(sale, "accepted", 1)))
    assert response.status_code == 409
    assert response.json()["code"] == "factory.order_not_in_production"
    assert event_count(db) == 0


def test_stage_list_of_the_protocol_is_the_order_machine_s() -> None:
    assert STAGES == FACTORY_STAGES
    assert SIGNATURE_HEADER == "X-Caas-Signature"
