"""The portal's digital key and privacy page: pair this phone (its public key posted by
phone-key.js), add a second driver's, revoke, try the key on the car, choose what is kept."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota.service import versions_of
from caas.protocol.mqtt import ManifestBody
from caas.vehicles.models import Vehicle
from tests.conftest import SmtpInbox
from tests.registration.support import Order, let_customer_log_in, order_in_state
from tests.vehicles.test_phone_keys import p256
from tests.web.support import csrf_token, log_in, submit, text_of

PAGE = "/portal/key"
SIM_URL = "http://127.0.0.1:8199"


@pytest.fixture
def settings(smtp: SmtpInbox) -> Settings:
    return Settings(
        env="test",
        database_url="postgresql+psycopg://unused/unused",
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        public_url="http://testserver",
        vehicle_sim_url=SIM_URL + "/",
    )


def order_of(
    db: Session, settings: Settings, clock: FixedClock, state: str, country: str = "ES"
) -> Order:
    order = order_in_state(db, settings=settings, now=clock.now(), state=state, country=country)
    if state == "delivered":
        db.get_one(Vehicle, order.vehicle_id).delivered_at = clock.now()
    let_customer_log_in(db, order, clock.now())
    return order


@pytest.fixture
def order(db: Session, settings: Settings, clock: FixedClock) -> Order:
    return order_of(db, settings, clock, "delivered")


@pytest.fixture
def owner(app_client: TestClient, order: Order) -> TestClient:
    log_in(app_client, order.customer_email)
    return app_client


def pair_form(client: TestClient, order: Order, public_key: str, **fields: str) -> object:
    """What phone-key.js posts once it has made this browser's key pair."""
    page = client.get(PAGE).text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    data = {
        "csrf_token": csrf_token(page),
        "idempotency_key": key.group(1) if key else "posted-without-a-form",
        "algorithm": "ECDSA-P256-SHA256",
        "label": "Mi teléfono",
        "public_key": public_key,
        **fields,
    }
    return client.post(f"{PAGE}/{order.vin}/phones", data=data, follow_redirects=False)


def manifest_keys(db: Session, order: Order) -> list[str]:
    db.expire_all()
    body = ManifestBody.model_validate(versions_of(db, order.vehicle_id)[0].body)
    return [key.label for key in body.phone_keys]


def test_the_page_pairs_this_phone_and_lists_it(
    owner: TestClient, db: Session, order: Order
) -> None:
    page = owner.get(PAGE)
    assert page.status_code == 200
    assert order.vin in page.text
    assert 'src="/static/phone-key.js"' in page.text
    assert f"connect-src 'self' {SIM_URL}" in page.headers["Content-Security-Policy"]
    assert 'data-operate="unlock"' in page.text

    _, public = p256()
    response = pair_form(owner, order, public)
    assert response.status_code == 303, response.text  # type: ignore[attr-defined]
    after = owner.get(PAGE).text
    assert f'data-active-key="{public}"' in after
    assert "Mi teléfono" in text_of(after)
    assert manifest_keys(db, order) == ["Mi teléfono"]


def test_a_second_click_pairs_once(owner: TestClient, db: Session, order: Order) -> None:
    page = owner.get(PAGE).text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    assert key is not None
    _, public = p256()
    data = {"csrf_token": csrf_token(page), "idempotency_key": key.group(1), "label": "Mi teléfono",
            "algorithm": "ECDSA-P256-SHA256", "public_key": public}  # fmt: skip
    for _ in range(2):
        response = owner.post(f"{PAGE}/{order.vin}/phones", data=data, follow_redirects=False)
        assert response.status_code == 303
    assert len(versions_of(db, order.vehicle_id)) == 1


def test_a_second_drivers_key_is_added_and_a_phone_revoked(
    owner: TestClient, db: Session, order: Order
) -> None:
    pair_form(owner, order, p256()[1])
    pair_form(owner, order, p256()[1], label="second driver")
    assert manifest_keys(db, order) == ["Mi teléfono", "second driver"]
    page = owner.get(PAGE).text
    # Newest first: the second driver's phone is the first one offered for revoking.
    revoke = re.search(rf'action="({PAGE}/{order.vin}/phones/\d+/revoke)"', page)
    assert revoke is not None
    response = submit(owner, PAGE, revoke.group(1), {})
    assert response.status_code == 303
    assert manifest_keys(db, order) == ["Mi teléfono"]
    assert "Revocado" in text_of(owner.get(PAGE).text)  # the customer reads Spanish


def test_a_pasted_key_that_is_not_one_is_shown_as_an_error(
    owner: TestClient, db: Session, order: Order
) -> None:
    response = pair_form(owner, order, "definitely not a public key, sorry about that")
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert "data-key-errors" in response.text  # type: ignore[attr-defined]
    assert versions_of(db, order.vehicle_id) == []


def test_before_delivery_the_page_waits(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    waiting = order_of(db, settings, clock, "in_transit")
    log_in(app_client, waiting.customer_email)
    page = app_client.get(PAGE).text
    assert "data-not-delivered" in page
    assert "data-pair-this-phone" not in page
    response = pair_form(app_client, waiting, p256()[1])
    assert response.status_code == 409  # type: ignore[attr-defined]


def test_another_customers_car_is_not_found(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock, order: Order
) -> None:
    other = order_of(db, settings, clock, "delivered", country="FR")
    log_in(app_client, other.customer_email)
    assert order.vin not in app_client.get(PAGE).text
    response = pair_form(app_client, order, p256()[1])
    assert response.status_code == 404  # type: ignore[attr-defined]


def test_without_a_car_link_there_is_no_unlock_button(
    app_client: TestClient, settings: Settings, order: Order
) -> None:
    settings.vehicle_sim_url = None
    log_in(app_client, order.customer_email)
    page = app_client.get(PAGE)
    assert 'data-operate="unlock"' not in page.text
    assert SIM_URL not in page.headers["Content-Security-Policy"]
