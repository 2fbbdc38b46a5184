"""The customer's portal: only their own orders, paying by card token, the live status, the
file (purchase, manuals, invoices, timeline) and the notifications."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.protocol.payments import CARD_ANSWERS_LATE, CARD_DECLINED, CARD_SUCCEEDS
from caas.sales.models import Sale
from caas.sales.service import transition_order
from tests.billing.conftest import (
    API_KEY,
    PLATFORM_TIMEOUT,
    WEBHOOK_SECRET,
    Buyer,
    PaymentSandbox,
    buyer,
    payment_sandbox,  # noqa: F401 - the sandbox served for real, shared with billing's tests
)
from tests.conftest import SmtpInbox
from tests.web.support import csrf_token, form_key, log_in, text_of


@pytest.fixture
def settings(smtp: SmtpInbox, payment_sandbox: PaymentSandbox) -> Settings:  # noqa: F811
    return Settings(
        env="test",
        database_url="postgresql+psycopg://unused/unused",
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        public_url="http://testserver",
        payment_url=payment_sandbox.url,
        payment_public_url="http://pay.example",
        payment_api_key=API_KEY,
        payment_webhook_secret=WEBHOOK_SECRET,
        payment_timeout_seconds=PLATFORM_TIMEOUT,
    )


def state_of(db: Session, sale_id: int) -> str:
    db.expire_all()
    return db.get_one(Sale, sale_id).state


def pay(client: TestClient, sale_id: int, token: str) -> httpx.Response:
    """Post the card form as pay.js does: only the provider's token, never the card."""
    page = client.get(f"/portal/orders/{sale_id}").text
    kind = re.search(r'name="kind" value="(\w+)"', page)
    assert kind is not None, "no payment is due on this order"
    return client.post(
        f"/portal/orders/{sale_id}/pay",
        data={
            "csrf_token": csrf_token(page),
            "idempotency_key": form_key(page),
            "kind": kind.group(1),
            "card_token": token,
        },
        follow_redirects=False,
    )


def test_a_customer_sees_only_their_own_orders(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    ana = buyer(db, settings, clock)
    ben = buyer(db, settings, clock, country="FR")
    log_in(app_client, ana.customer.email)
    listed = app_client.get("/portal/orders").text
    assert ana.sale.number in listed
    assert ben.sale.number not in listed
    assert app_client.get(f"/portal/orders/{ana.sale.id}").status_code == 200
    assert app_client.get(f"/portal/orders/{ben.sale.id}").status_code == 404
    assert app_client.get(f"/portal/orders/{ben.sale.id}/status").status_code == 404
    assert app_client.get("/intranet/sales").status_code == 403


def test_the_order_page_offers_the_deposit_with_a_card_form_that_goes_to_the_provider(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    ana = buyer(db, settings, clock)
    log_in(app_client, ana.customer.email)
    page = app_client.get(f"/portal/orders/{ana.sale.id}").text
    assert 'data-tokens-url="http://pay.example/v1/tokens"' in page
    assert 'name="kind" value="deposit"' in page
    card_inputs = re.findall(r"<input[^>]*data-card=[^>]*>", page)
    assert len(card_inputs) == 3
    assert all(" name=" not in tag for tag in card_inputs)  # never posted to the platform
    assert '<script src="/static/pay.js" defer></script>' in page
    assert f'data-status-url="/portal/orders/{ana.sale.id}/status"' in page


def test_paying_the_deposit_with_a_token_moves_the_order_and_a_declined_card_does_not(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,  # noqa: F811
) -> None:
    ana = buyer(db, settings, clock)
    log_in(app_client, ana.customer.email)

    declined = pay(app_client, ana.sale.id, payment_sandbox.token(CARD_DECLINED))
    assert declined.status_code == 402
    assert "El pago no se ha completado" in declined.text
    assert state_of(db, ana.sale.id) == "awaiting_deposit"

    paid = pay(app_client, ana.sale.id, payment_sandbox.token(CARD_SUCCEEDS))
    assert paid.status_code == 303, paid.text
    assert state_of(db, ana.sale.id) == "waiting_for_factory"
    page = text_of(app_client.get(f"/portal/orders/{ana.sale.id}").text)
    assert "Pago recibido" in page  # Ana reads Spanish
    assert "Pagado" in page and "Fallido" in page  # both attempts are on the record
    assert 'name="card_token"' not in app_client.get(f"/portal/orders/{ana.sale.id}").text

    file_page = app_client.get("/portal/file").text
    invoice = re.search(r'href="/api/v1/invoices/(\d+)/pdf"', file_page)
    assert invoice is not None
    pdf = app_client.get(f"/api/v1/invoices/{invoice.group(1)}/pdf")
    assert pdf.headers["content-type"] == "application/pdf"


def test_the_live_status_follows_the_order(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    ana = buyer(db, settings, clock)
    log_in(app_client, ana.customer.email)
    status = app_client.get(f"/portal/orders/{ana.sale.id}/status").json()
    assert status["state"] == "awaiting_deposit"
    assert [step["status"] for step in status["journey"]][:2] == ["current", "todo"]
    for state in ("waiting_for_factory", "accepted", "scheduled", "body", "paint"):
        clock.advance(timedelta(minutes=1))
        transition_order(db, ana.sale, state, actor=Actor.system("factory"), now=clock.now())
    db.commit()
    status = app_client.get(f"/portal/orders/{ana.sale.id}/status").json()
    assert (status["state"], status["label"], status["final"]) == ("paint", "Pintura", False)
    assert [step["status"] for step in status["factory"]] == [
        "done", "done", "done", "current", "todo", "todo", "todo", "todo",
    ]  # fmt: skip
    page = app_client.get(f"/portal/orders/{ana.sale.id}").text
    assert page.count('class="done"') >= 4


def test_the_file_shows_purchase_manuals_and_the_full_timeline(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    ana = buyer(db, settings, clock)
    log_in(app_client, ana.customer.email)
    page = app_client.get("/portal/file")
    assert page.status_code == 200
    assert ana.sale.number in page.text
    assert 'href="/api/v1/platforms/AURA/manual.pdf?lang=es"' in page.text
    assert "Venta cerrada" in text_of(page.text)  # the timeline, in Ana's language
    manual = app_client.get("/api/v1/platforms/AURA/manual.pdf?lang=es")
    assert manual.headers["content-type"] == "application/pdf"


def test_notifications_are_listed_with_the_unread_count_and_marked_read(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    ana: Buyer = buyer(db, settings, clock)
    transition_order(db, ana.sale, "waiting_for_factory", actor=Actor.system(), now=clock.now())
    clock.advance(timedelta(hours=1))
    transition_order(db, ana.sale, "ordered", actor=Actor.system(), now=clock.now())
    db.commit()
    log_in(app_client, ana.customer.email)
    orders = app_client.get("/portal/orders").text
    assert re.search(r'class="count"[^>]*>2<', orders)
    page = app_client.get("/portal/notifications").text
    assert page.count('class="card notice unread"') == 2
    marked = app_client.post(
        "/portal/notifications/read",
        data={"csrf_token": csrf_token(page)},
        follow_redirects=False,
    )
    assert marked.status_code == 303
    page = app_client.get("/portal/notifications").text
    assert 'class="card notice unread"' not in page
    assert 'class="count"' not in page


def test_a_payment_the_bank_has_not_confirmed_yet_is_shown_as_such_not_offered_again(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,  # noqa: F811
) -> None:
    ana = buyer(db, settings, clock)
    log_in(app_client, ana.customer.email)
    pending = pay(app_client, ana.sale.id, payment_sandbox.token(CARD_ANSWERS_LATE))
    assert pending.status_code == 303
    page = app_client.get(f"/portal/orders/{ana.sale.id}").text
    assert "data-payment-in-progress" in page
    assert 'id="pay-form"' not in page
    status = app_client.get(f"/portal/orders/{ana.sale.id}/status").json()
    assert (status["state"], status["payment_in_progress"]) == ("awaiting_deposit", True)
