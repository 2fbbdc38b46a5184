"""The portal's saved cards page: the card tokenised in the browser at the provider (only the
token is posted), one card per form whatever the clicks, the default badge, making another
card the default, removing one; another customer's card is a 404."""

from __future__ import annotations

import re
from html import unescape

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing.models import Payment, PaymentMethod
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store.models import Purchase
from tests.billing.conftest import (
    Buyer,
    PaymentSandbox,
    buyer,
    payment_sandbox,  # noqa: F401 - the sandbox served for real, shared with billing's tests
    settings,  # noqa: F401 - settings that reach the sandbox
)
from tests.store.conftest import offer, owner_of
from tests.store.engine import Delivered, delivered, engine_keys, signing
from tests.web.support import csrf_token, form_key, log_in, text_of

__all__ = ["delivered", "engine_keys", "signing"]

PAGE = "/portal/payment-methods"
MASTERCARD = "5555555555554444"


@pytest.fixture
def customer(db: Session, settings: Settings, clock: FixedClock) -> Buyer:  # noqa: F811
    return buyer(db, settings, clock)


@pytest.fixture
def client(app_client: TestClient, customer: Buyer) -> TestClient:
    log_in(app_client, customer.user.email)
    return app_client


def add_card(client: TestClient, token: str, *, key: str | None = None) -> httpx.Response:
    """Post the add form as pay.js does: the page's key and the provider's token only."""
    page = client.get(PAGE).text
    return client.post(
        PAGE,
        data={
            "csrf_token": csrf_token(page),
            "idempotency_key": key or form_key(page),
            "card_token": token,
        },
        follow_redirects=False,
    )


def command(client: TestClient, method_id: int, action: str) -> httpx.Response:
    page = client.get(PAGE).text
    found = re.search(
        rf'action="{PAGE}/{method_id}/{action}"[^>]*>\s*<input[^>]+value="([^"]+)">\s*'
        r'<input type="hidden" name="idempotency_key" value="([^"]+)"',
        page,
    )
    assert found is not None, f"no {action} form for card {method_id}"
    return client.post(
        f"{PAGE}/{method_id}/{action}",
        data={"csrf_token": found.group(1), "idempotency_key": found.group(2)},
        follow_redirects=False,
    )


def hidden_cart(page: str) -> str:
    found = re.search(r'name="cart" value="([^"]*)"', page)
    assert found is not None, "no cart on the checkout"
    return unescape(found.group(1))


def cards(db: Session, customer: Buyer) -> list[PaymentMethod]:
    db.expire_all()
    return list(
        db.scalars(
            select(PaymentMethod)
            .where(PaymentMethod.customer_id == customer.customer.id)
            .order_by(PaymentMethod.id)
        )
    )


def test_the_page_tokenises_in_the_browser_and_lists_the_saved_card(
    db: Session,
    client: TestClient,
    customer: Buyer,
    payment_sandbox: PaymentSandbox,  # noqa: F811
) -> None:
    page = client.get(PAGE)
    assert page.status_code == 200
    assert 'href="/portal/payment-methods"' in page.text  # in the portal's menu
    assert 'id="pay-form"' in page.text and "/static/pay.js" in page.text
    assert 'data-tokens-url="' in page.text
    # The card fields have no name: the browser never posts the card here.
    assert 'name="card_number"' not in page.text
    assert "Mis tarjetas" in text_of(page.text)  # a Spanish customer

    page_key = form_key(page.text)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    first = add_card(client, token, key=page_key)
    again = add_card(client, token, key=page_key)  # a double click
    assert (first.status_code, first.headers["location"]) == (303, PAGE)
    assert again.status_code == 303
    (saved,) = cards(db, customer)
    assert (saved.brand, saved.last4, saved.is_default) == ("visa", "4242", True)

    shown = text_of(client.get(PAGE).text)
    assert "Tarjeta guardada." in shown  # the flash
    assert "Visa •••• 4242" in shown
    assert "Predeterminada" in shown
    assert "Caduca 12/2040" in shown


def test_a_token_the_provider_does_not_know_is_shown_on_the_form(
    db: Session, client: TestClient, customer: Buyer
) -> None:
    response = add_card(client, "tok_0000000000000000")
    assert response.status_code == 422
    assert "Los datos de la tarjeta no son válidos" in text_of(response.text)  # a Spanish customer
    assert cards(db, customer) == []


def test_make_default_and_remove_from_the_page(
    db: Session,
    client: TestClient,
    customer: Buyer,
    settings: Settings,  # noqa: F811
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,  # noqa: F811
) -> None:
    add_card(client, payment_sandbox.token(CARD_SUCCEEDS))
    add_card(client, payment_sandbox.token(MASTERCARD))
    visa, mastercard = cards(db, customer)
    assert (visa.is_default, mastercard.is_default) == (True, False)

    made = command(client, mastercard.id, "default")
    assert (made.status_code, made.headers["location"]) == (303, PAGE)
    visa, mastercard = cards(db, customer)
    assert (visa.is_default, mastercard.is_default) == (False, True)
    assert "paga las renovaciones" in text_of(client.get(PAGE).text)

    removed = command(client, mastercard.id, "remove")
    assert removed.status_code == 303
    visa, mastercard = cards(db, customer)
    assert mastercard.removed_at is not None
    assert visa.is_default  # the card left takes over
    shown = text_of(client.get(PAGE).text)
    assert "Mastercard •••• 4444" not in shown
    assert "Visa •••• 4242" in shown

    # Someone else cannot touch it: a 404 page, and the card stays.
    stranger = buyer(db, settings, clock, "FR")
    client.post("/logout", data={"csrf_token": csrf_token(client.get(PAGE).text)})
    log_in(client, stranger.user.email)
    page = client.get(PAGE).text
    assert "Visa •••• 4242" not in text_of(page)
    response = client.post(
        f"{PAGE}/{visa.id}/remove",
        data={"csrf_token": csrf_token(page), "idempotency_key": "stranger-removes-it"},
        follow_redirects=False,
    )
    assert response.status_code == 404
    assert cards(db, customer)[0].removed_at is None


def test_the_checkout_offers_the_default_card(
    db: Session,
    app_client: TestClient,
    delivered: Delivered,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,  # noqa: F811
) -> None:
    owner = owner_of(db, delivered.car, clock.now())
    log_in(app_client, owner.customer.email)
    day = offer(db, owner.vehicle, "power_boost", "window", "1D", net_minor=900)
    store = f"/portal/cars/{owner.vehicle.vin}/store"

    def checkout() -> str:
        page = app_client.get(store).text
        response = app_client.post(
            f"{store}/quote",
            data={"csrf_token": csrf_token(page), "offer.power_boost": str(day.id)},
        )
        assert response.status_code == 200, response.text
        return response.text

    assert "data-saved-card" not in checkout()  # no saved card: only the card form
    add_card(app_client, payment_sandbox.token(MASTERCARD))
    page = checkout()
    assert "Pagar 10,89 € con Mastercard •••• 4444" in text_of(page)
    paid = app_client.post(
        f"{store}/purchase",
        data={
            "csrf_token": csrf_token(page),
            "idempotency_key": form_key(page),
            "cart": hidden_cart(page),
            "saved_card": "default",
        },
        follow_redirects=False,
    )
    assert paid.status_code == 303, paid.text
    (purchase,) = db.scalars(select(Purchase).where(Purchase.vehicle_id == owner.vehicle.id))
    payment = db.get_one(Payment, purchase.payment_id)
    assert (payment.state, payment.card_last4) == ("authorised", "4444")
