"""Registering the car after the final payment, against the registry simulator over HTTP:
the plate, refusals that stay on the order, the dealer's correction and retry, outages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import Actor, subject_history
from caas.core.outbox import OutboxMessage, Relay
from caas.core.settings import Settings
from caas.protocol.registry import PLATE_FORMATS
from caas.registration.models import Registration
from caas.registration.service import SUBMIT_TOPIC
from caas.sales.models import Customer
from caas.sales.service import final_payment_captured
from tests.conftest import SmtpInbox
from tests.registration.support import (
    DEALERS,
    Order,
    RegistrySim,
    let_customer_log_in,
    login,
    notified_kinds,
    order_in_state,
    sale_of,
    vehicle_of,
)


def pay_in_full(db: Session, order: Order, clock: FixedClock) -> None:
    """The final payment is captured: the order goes to registration (as billing does it)."""
    sale = sale_of(db, order)
    final_payment_captured(db, sale, actor=Actor(kind="provider", label="sandbox"), now=clock.now())
    db.commit()


def retry(client: TestClient, order: Order, key: str = "retry-key-0001") -> Any:
    return client.post(
        f"/api/v1/sales/{order.sale_id}/registration/retry", headers={"Idempotency-Key": key}
    )


def registration_of(db: Session, order: Order) -> Registration:
    db.expire_all()
    return db.scalars(select(Registration).where(Registration.sale_id == order.sale_id)).one()


@pytest.mark.parametrize("country", ["ES", "FR", "DE", "IT", "PT"])
def test_final_payment_registers_the_car_with_its_countrys_registry(
    db: Session,
    settings: Settings,
    clock: FixedClock,
    relay: Relay,
    registry: RegistrySim,
    country: str,
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now(), country=country)
    pay_in_full(db, order, clock)
    assert sale_of(db, order).state == "registering"
    assert registry.registrations() == []  # nothing leaves before the relay runs after commit

    clock.advance(timedelta(minutes=1))
    relay.run_once()

    car = vehicle_of(db, order)
    assert car.plate is not None and PLATE_FORMATS[country].match(car.plate)
    assert car.registered_country == country
    assert car.registered_at == clock.now()
    assert sale_of(db, order).state == "registered"
    customer = db.get_one(Customer, order.customer_id)
    assert registry.registrations() == [
        {
            "country": country,
            "vin": order.vin,
            "plate": car.plate,
            "holder": f"{customer.first_name} {customer.last_name}",
            "state": "active",
        }
    ]
    registration = registration_of(db, order)
    assert (registration.state, registration.attempts) == ("registered", 1)
    assert registration.request_payload is not None and order.vin in str(
        registration.request_payload
    )
    (event,) = [
        e for e in subject_history(db, "order", order.sale_id) if e.to_state == "registered"
    ]
    assert event.details["plate"] == car.plate
    assert event.actor_kind == "registry"
    assert notified_kinds(db, order)[-1] == "order.registered"


def test_refusal_stays_on_the_order_then_correction_and_retry_register(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    relay: Relay,
    smtp: SmtpInbox,
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now(), street="Calle Mayor")
    pay_in_full(db, order, clock)
    relay.run_once()

    login(app_client, DEALERS["ES"])
    shown = app_client.get(f"/api/v1/sales/{order.sale_id}/registration").json()
    assert shown["state"] == "rejected"
    assert shown["order_state"] == "registration_rejected"
    assert shown["rejection"] == {
        "reason": "domicilio incompleto: falta el número de la vía",
        "field": "street",
        "registry_field": "domicilio",
    }
    history = app_client.get(f"/api/v1/sales/{order.sale_id}/history").json()
    assert history[-1]["to_state"] == "registration_rejected"
    assert history[-1]["details"]["reason"] == "domicilio incompleto: falta el número de la vía"
    assert history[-1]["actor"] == "registry: DGT"
    assert notified_kinds(db, order)[-1] == "order.registration_rejected"
    assert len(smtp.to(order.customer_email)) == 2  # activation, then the refusal

    corrected = app_client.patch(
        f"/api/v1/sales/{order.sale_id}/customer", json={"street": "Calle Mayor 7, 2º A"}
    )
    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["street"] == "Calle Mayor 7, 2º A"
    clock.advance(timedelta(minutes=5))
    retried = retry(app_client, order)
    assert retried.status_code == 202, retried.text
    assert retried.json()["state"] == "submitted"
    assert retried.json()["rejection"] is None
    relay.run_once()

    shown = app_client.get(f"/api/v1/sales/{order.sale_id}/registration").json()
    assert shown["state"] == "registered"
    assert shown["attempts"] == 2
    assert PLATE_FORMATS["ES"].match(shown["plate"])
    registration = registration_of(db, order)
    assert registration.request_payload is not None
    assert registration.request_payload["domicilio"] == "Calle Mayor 7, 2º A"
    events = [
        (entry["event"], entry["details"])
        for entry in app_client.get(f"/api/v1/sales/{order.sale_id}/history").json()
    ]
    assert ("customer.corrected", {
        "before": {"street": "Calle Mayor"}, "after": {"street": "Calle Mayor 7, 2º A"},
    }) in events  # fmt: skip
    assert [event for event, _ in events[-4:]] == [
        "order.registration_rejected",
        "customer.corrected",
        "order.registering",
        "order.registered",
    ]


def test_a_registry_refusal_ordered_by_the_simulator_names_its_field(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    relay: Relay,
    registry: RegistrySim,
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now(), country="DE")
    registry.reject_next("DE", "Postleitzahl passt nicht zum Wohnort", "Halter.PLZ")
    pay_in_full(db, order, clock)
    relay.run_once()
    login(app_client, DEALERS["DE"])
    shown = app_client.get(f"/api/v1/sales/{order.sale_id}/registration").json()
    assert shown["rejection"]["field"] == "postal_code"
    assert shown["authority"] == "Zulassungsstelle (KBA)"


def test_registry_outage_is_retried_until_it_registers(
    db: Session,
    settings: Settings,
    clock: FixedClock,
    relay: Relay,
    registry: RegistrySim,
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now(), country="IT")
    registry.outage(down=True)
    pay_in_full(db, order, clock)
    relay.run_once()

    db.expire_all()
    message = db.scalars(select(OutboxMessage).where(OutboxMessage.topic == SUBMIT_TOPIC)).one()
    assert message.done_at is None
    assert message.last_error is not None and message.last_error.startswith("RetryLater")
    assert sale_of(db, order).state == "registering"
    assert registration_of(db, order).state == "submitted"

    registry.outage(down=False)
    relay.run_once()  # not due yet: the relay waits its backoff
    assert sale_of(db, order).state == "registering"
    clock.advance(relay.backoff(message.attempts))
    relay.run_once()
    assert sale_of(db, order).state == "registered"
    assert vehicle_of(db, order).plate is not None


def test_a_retried_command_with_the_same_key_submits_once(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    relay: Relay,
    registry: RegistrySim,
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now())
    registry.reject_next("ES", "titular pendiente de verificación", "domicilio")
    pay_in_full(db, order, clock)
    relay.run_once()
    login(app_client, DEALERS["ES"])
    first = retry(app_client, order, key="same-key-123")
    second = retry(app_client, order, key="same-key-123")
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert registration_of(db, order).attempts == 2
    assert retry(app_client, order, key="other-key-456").status_code == 409


def test_retry_is_only_for_a_refused_registration(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now())
    pay_in_full(db, order, clock)
    login(app_client, DEALERS["ES"])
    response = retry(app_client, order)
    assert response.status_code == 409
    assert response.json()["code"] == "order.invalid_transition"


def test_retry_needs_an_idempotency_key(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now(), state="registration_rejected")
    login(app_client, DEALERS["ES"])
    response = app_client.post(f"/api/v1/sales/{order.sale_id}/registration/retry")
    assert response.status_code == 422
    assert response.json()["field"] == "Idempotency-Key"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"postal_code": "99999"}, "postal_code"),
        ({"street": "  "}, "street"),
        ({"street": "ab"}, "street"),
        ({"city": None}, "city"),
        ({"first_name": ""}, "first_name"),
        ({"national_id": "87654321X"}, "national_id"),
        ({}, "body"),
    ],
)
def test_a_bad_correction_is_422_naming_the_field_and_changes_nothing(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    body: dict[str, Any],
    field: str,
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now(), state="registration_rejected")
    login(app_client, DEALERS["ES"])
    before = app_client.get(f"/api/v1/sales/{order.sale_id}").json()["customer"]
    response = app_client.patch(f"/api/v1/sales/{order.sale_id}/customer", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert app_client.get(f"/api/v1/sales/{order.sale_id}").json()["customer"] == before


def test_a_correction_normalises_the_postal_code_for_the_customers_country(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now(), country="PT")
    login(app_client, DEALERS["PT"])
    response = app_client.patch(
        f"/api/v1/sales/{order.sale_id}/customer",
        json={"postal_code": " 4000-322 ", "city": "Porto"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["postal_code"] == "4000-322"
    (entry,) = [
        e for e in subject_history(db, "order", order.sale_id) if e.event == "customer.corrected"
    ]
    assert entry.details == {
        "before": {"postal_code": "4100-113"},
        "after": {"postal_code": "4000-322"},
    }
    assert entry.actor_label == DEALERS["PT"]


def test_the_holder_cannot_be_corrected_once_the_car_is_registered(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now(), state="registered")
    login(app_client, DEALERS["ES"])
    response = app_client.patch(f"/api/v1/sales/{order.sale_id}/customer", json={"city": "Getafe"})
    assert response.status_code == 409
    assert response.json()["code"] == "customer.registration_data_locked"


def test_another_dealership_gets_404_on_every_registration_route(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    relay: Relay,
    registry: RegistrySim,
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now())
    registry.reject_next("ES", "titular pendiente de verificación", "domicilio")
    pay_in_full(db, order, clock)
    relay.run_once()
    login(app_client, DEALERS["FR"])
    base = f"/api/v1/sales/{order.sale_id}"
    assert app_client.get(f"{base}/registration").status_code == 404
    assert app_client.patch(f"{base}/customer", json={"city": "Lyon"}).status_code == 404
    assert retry(app_client, order).status_code == 404
    assert sale_of(db, order).state == "registration_rejected"


def test_the_customer_and_the_operator_read_the_registration(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    relay: Relay,
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now())
    other = order_in_state(db, settings=settings, now=clock.now(), national_id="87654321X")
    pay_in_full(db, order, clock)
    relay.run_once()
    let_customer_log_in(db, order, clock.now())

    login(app_client, order.customer_email)
    mine = app_client.get(f"/api/v1/sales/{order.sale_id}/registration")
    assert mine.status_code == 200
    assert mine.json()["state"] == "registered"
    assert app_client.get(f"/api/v1/sales/{other.sale_id}/registration").status_code == 404
    assert (
        app_client.patch(
            f"/api/v1/sales/{order.sale_id}/customer", json={"city": "Getafe"}
        ).status_code
        == 403
    )

    login(app_client, "operator@caas.example")
    assert app_client.get(f"/api/v1/sales/{order.sale_id}/registration").json() == mine.json()
    not_yet = app_client.get(f"/api/v1/sales/{other.sale_id}/registration")
    assert not_yet.status_code == 404
    assert not_yet.json()["code"] == "registration.not_started"
