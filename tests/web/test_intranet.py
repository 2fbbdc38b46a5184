"""The dealer's intranet: closing a sale through the form, the list, the order's page and the
dealer's actions on it (registration correction and retry, delivery)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caas.catalog.models import Feature, Platform
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.outbox import Relay
from caas.core.settings import Settings
from caas.sales.models import Customer, Sale
from caas.sales.service import final_payment_captured
from caas.worker import build_relay
from tests.factories import new_salesperson, sale_payload
from tests.registration.support import (
    REGISTRY_API_KEY,
    RegistrySim,
    order_in_state,
    sale_of,
    serve_registries,
)
from tests.web.support import csrf_token, form_key, log_in, sale_form, submit, text_of

DEALER = "sales.madrid@caas.example"


def close_sale_through_form(client: TestClient, payload: dict[str, Any]) -> httpx.Response:
    return submit(
        client, "/intranet/sales/new", "/intranet/sales/new", sale_form(payload), with_key=True
    )


def test_dealer_closes_a_sale_through_the_form_and_finds_it_in_the_list(
    app_client: TestClient, db: Session
) -> None:
    log_in(app_client, DEALER)
    payload = sale_payload()
    response = close_sale_through_form(app_client, payload)
    assert response.status_code == 303, response.text
    sale = db.scalars(select(Sale)).one()
    assert response.headers["location"] == f"/intranet/sales/{sale.id}"
    assert sale.state == "awaiting_deposit"

    page = app_client.get(response.headers["location"])
    assert f"Sale {sale.number} is closed" in page.text
    assert "€39,446.00" in page.text  # the quote's total, as priced when the sale closed
    assert "Sale closed" in page.text  # the timeline's first entry
    listed = app_client.get("/intranet/sales")
    assert sale.number in listed.text
    assert payload["customer"]["last_name"] in listed.text
    found = app_client.get("/intranet/sales", params={"search": sale.number}).text
    assert sale.number in found
    assert sale.number not in app_client.get("/intranet/sales?state=delivered").text


def test_a_field_error_is_shown_next_to_the_field_and_the_input_is_kept(
    app_client: TestClient, db: Session
) -> None:
    log_in(app_client, DEALER)
    payload = sale_payload(national_id="12345678A", city="Alcalá <de> Henares")
    response = close_sale_through_form(app_client, payload)
    assert response.status_code == 422
    error = re.search(r'id="customer.national_id-error">([^<]+)<', response.text)
    assert error is not None and "not a valid DNI/NIE" in error.group(1)
    assert 'value="12345678A"' in response.text
    assert 'value="Alcalá &lt;de&gt; Henares"' in response.text  # kept, and escaped
    assert 'value="driver_assist" checked' in response.text
    assert db.scalar(select(func.count(Customer.id))) == 0


def test_a_service_error_after_writing_rolls_everything_back(
    app_client: TestClient, db: Session
) -> None:
    log_in(app_client, DEALER)
    payload = sale_payload()
    payload["plan"]["features"] = ["driver_assist", "teleporter"]
    response = close_sale_through_form(app_client, payload)
    assert response.status_code == 422
    assert 'id="plan.features-error"' in response.text
    assert "no option 'teleporter'" in text_of(response.text)
    assert db.scalar(select(func.count(Customer.id))) == 0
    assert db.scalar(select(func.count(Sale.id))) == 0


def test_posting_the_same_form_twice_closes_one_sale(app_client: TestClient, db: Session) -> None:
    log_in(app_client, DEALER)
    html = app_client.get("/intranet/sales/new").text
    data = {
        "csrf_token": csrf_token(html),
        "idempotency_key": form_key(html),
        **sale_form(sale_payload()),
    }
    first = app_client.post("/intranet/sales/new", data=data, follow_redirects=False)
    second = app_client.post("/intranet/sales/new", data=data, follow_redirects=False)
    assert first.headers["location"] == second.headers["location"]
    assert db.scalar(select(func.count(Sale.id))) == 1


def test_the_quote_button_prices_the_plan_without_closing_the_sale(
    app_client: TestClient, db: Session
) -> None:
    log_in(app_client, DEALER)
    form = {**sale_form(sale_payload()), "action": "quote"}
    response = submit(app_client, "/intranet/sales/new", "/intranet/sales/new", form)
    assert response.status_code == 200
    shown = text_of(response.text)
    assert "VAT 21.00 % €6,846.00" in shown
    assert "Total €39,446.00" in shown
    assert "Deposit to reserve €3,944.60" in shown
    assert db.scalar(select(func.count(Sale.id))) == 0


def test_the_form_offers_each_platforms_options_and_the_live_quote_endpoint(
    app_client: TestClient,
) -> None:
    log_in(app_client, DEALER)
    page = app_client.get("/intranet/sales/new").text
    assert 'data-quote-url="/api/v1/quotes"' in page
    assert 'name="plan.features.CIRRUS" value="motorway_autopilot"' in page
    assert 'name="plan.features.AURA" value="motorway_autopilot"' not in page
    assert '<script src="/static/sale-form.js" defer></script>' in page
    assert app_client.get("/static/sale-form.js").status_code == 200
    assert "text/css" in app_client.get("/static/caas.css").headers["content-type"]


def test_another_dealerships_sale_is_not_found(
    app_client: TestClient, db: Session, clock: FixedClock
) -> None:
    log_in(app_client, DEALER)
    location = close_sale_through_form(app_client, sale_payload()).headers["location"]
    log_in(app_client, "sales.lyon@caas.example")
    response = app_client.get(location)
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in response.text
    assert "S2026" not in app_client.get("/intranet/sales").text
    colleague = new_salesperson(db, "MAD01", clock.now())
    db.commit()
    log_in(app_client, colleague.email)
    assert app_client.get(location).status_code == 200


@pytest.fixture
def registry() -> Iterator[RegistrySim]:
    yield from serve_registries(seed=7)


@pytest.fixture
def relay(
    settings: Settings, registry: RegistrySim, sessions: sessionmaker[Session], clock: FixedClock
) -> Relay:
    wired = settings.model_copy(
        update={"registry_url": registry.url, "registry_api_key": REGISTRY_API_KEY}
    )
    return build_relay(wired, sessions, clock)


def test_a_refused_registration_is_corrected_retried_and_the_car_delivered_from_the_page(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    relay: Relay,
) -> None:
    order = order_in_state(db, settings=settings, now=clock.now(), street="Calle Mayor")
    final_payment_captured(
        db, sale_of(db, order), actor=Actor(kind="provider", label="sandbox"), now=clock.now()
    )
    db.commit()
    relay.run_once()  # the registry refuses: the street has no number
    page_url = f"/intranet/sales/{order.sale_id}"
    log_in(app_client, DEALER)

    page = app_client.get(page_url).text
    assert "domicilio incompleto: falta el número de la vía" in page
    assert 'id="street-error"' in page  # the field to correct is marked
    assert 'value="Calle Mayor"' in page

    same = submit(app_client, page_url, f"{page_url}/customer", {"street": "Calle Mayor"})
    assert same.status_code == 422  # nothing changed: nothing to correct
    fixed = submit(app_client, page_url, f"{page_url}/customer", {"street": "Calle Mayor 7, 2º A"})
    assert fixed.status_code == 303, fixed.text
    assert "correct" in app_client.get(page_url).text
    retried = submit(app_client, page_url, f"{page_url}/registration/retry", {}, with_key=True)
    assert retried.status_code == 303, retried.text
    assert sale_of(db, order).state == "registering"
    relay.run_once()
    page = app_client.get(page_url).text
    assert sale_of(db, order).state == "registered"
    assert "data-plate" in page

    too_early = submit(
        app_client,
        page_url,
        f"{page_url}/delivery",
        {"scheduled_for": (clock.now() - timedelta(days=1)).date().isoformat(), "carrier": "X Y"},
        with_key=True,
    )
    assert too_early.status_code == 422
    assert 'id="scheduled_for-error"' in too_early.text
    when = (clock.now() + timedelta(days=3)).date().isoformat()
    scheduled = submit(
        app_client,
        page_url,
        f"{page_url}/delivery",
        {"scheduled_for": when, "carrier": "TransAuto Iberia"},
        with_key=True,
    )
    assert scheduled.status_code == 303, scheduled.text
    assert sale_of(db, order).state == "delivery_scheduled"
    dispatched = submit(
        app_client,
        page_url,
        f"{page_url}/delivery/dispatch",
        {"tracking_number": "TAI-2026-0042"},
        with_key=True,
    )
    assert dispatched.status_code == 303, dispatched.text
    completed = submit(app_client, page_url, f"{page_url}/delivery/complete", {}, with_key=True)
    assert completed.status_code == 303, completed.text
    assert sale_of(db, order).state == "delivered"
    shown = text_of(app_client.get(page_url).text)
    assert "Delivered: waiting for the phone to be paired" in shown
    assert "TAI-2026-0042" in shown

    # A stale tab posts "complete" again: the page says why, nothing changes.
    again = submit(
        app_client, page_url, f"{page_url}/delivery/complete", {"idempotency_key": "stale-tab-1"}
    )
    assert again.status_code == 409
    assert "cannot go from" in again.text


def test_the_dealer_opens_the_file_of_their_own_customers_only(
    app_client: TestClient, db: Session
) -> None:
    log_in(app_client, DEALER)
    order_url = close_sale_through_form(app_client, sale_payload()).headers["location"]
    customer_id = db.scalars(select(Sale.customer_id)).one()
    assert f'href="/intranet/customers/{customer_id}"' in app_client.get(order_url).text
    file_page = app_client.get(f"/intranet/customers/{customer_id}")
    assert file_page.status_code == 200
    assert "Sale closed" in text_of(file_page.text)
    log_in(app_client, "sales.lyon@caas.example")
    assert app_client.get(f"/intranet/customers/{customer_id}").status_code == 404


def test_the_sale_form_offers_no_option_withdrawn_from_the_catalog(
    app_client: TestClient, db: Session
) -> None:
    log_in(app_client, DEALER)
    box = 'name="plan.features.AURA" value="entertainment"'
    assert box in app_client.get("/intranet/sales/new").text
    aura = db.scalars(select(Platform).where(Platform.code == "AURA")).one()
    feature = db.scalars(
        select(Feature).where(Feature.platform_id == aura.id, Feature.code == "entertainment")
    ).one()
    feature.active = False
    db.commit()
    assert box not in app_client.get("/intranet/sales/new").text
