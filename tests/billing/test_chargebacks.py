"""Chargebacks: the card's bank takes captured money back; the provider's signed event is
applied once, to the ledger, the payment, the customer's file and the customer's inbox."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing import ledger
from caas.billing.models import Payment
from caas.core.clock import FixedClock
from caas.core.history import customer_timeline
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.protocol.payments import CARD_SUCCEEDS
from tests.billing.conftest import PaymentSandbox, buyer, deliver, login, pay


def dispute(payment_sandbox: PaymentSandbox, provider_ref: str, **body: object) -> httpx.Response:
    """The card's bank disputes the payment (the sandbox's simulator control)."""
    return httpx.post(
        f"{payment_sandbox.url}/sim/authorizations/{provider_ref}/chargeback", json=body
    )


def test_a_chargeback_is_posted_once_and_shows_in_the_customers_file(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
) -> None:
    who = buyer(db, settings, clock)
    login(app_client, who.customer.email)
    paid = pay(
        app_client, who.sale.id, "deposit", payment_sandbox.token(CARD_SUCCEEDS), "chargeback-0001"
    )
    assert paid.status_code == 201, paid.text
    payment = db.get_one(Payment, paid.json()["id"])
    assert payment.provider_ref is not None
    before = ledger.customer_balance(db, who.customer.id)
    assert before == payment.amount_minor

    taken = dispute(payment_sandbox, payment.provider_ref, reason="fraudulent")
    assert taken.status_code == 201, taken.text
    event = payment_sandbox.inbox.wait_for(payment.reference, "chargeback.created")
    assert deliver(app_client, event)["state"] == "charged_back"
    assert deliver(app_client, event)["state"] == "charged_back"  # a redelivery: nothing more

    balances = ledger.balances(db, customer_id=who.customer.id)
    assert balances[ledger.CHARGEBACKS] == payment.amount_minor
    assert ledger.customer_balance(db, who.customer.id) == 0
    kinds = [entry.kind for entry in ledger.entries_of_payment(db, payment.id)]
    assert kinds.count("chargeback") == 2  # one posting of two lines
    timeline = [
        (entry.event, entry.actor_kind, entry.details.get("reason"))
        for entry in customer_timeline(db, who.customer.id)
    ]
    assert ("payment.charged_back", "provider", "fraudulent") in timeline
    told = db.scalars(select(Notification.kind).where(Notification.user_id == who.user.id)).all()
    assert told.count("payment.charged_back") == 1
    # Nothing is left to take back, and a refund of it is refused by the provider too.
    assert dispute(payment_sandbox, payment.provider_ref).status_code == 400


def test_only_captured_money_can_be_disputed_at_the_sandbox(
    payment_sandbox: PaymentSandbox,
) -> None:
    assert dispute(payment_sandbox, "auth_unknown").status_code == 404
