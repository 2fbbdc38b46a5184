"""The customer corrects their own details: checked for their country, every correction kept
in their file with the old and new values; the national id is the dealer's to correct."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.core.history import HistoryEntry
from caas.privacy import service as privacy
from caas.sales.models import Customer
from tests.registration.support import login
from tests.vehicles.cars import Fleet
from tests.web.support import log_in, submit, text_of


def _corrections(db: Session, fleet: Fleet) -> list[dict[str, object]]:
    query = (
        select(HistoryEntry)
        .where(
            HistoryEntry.customer_id == fleet.customer_id,
            HistoryEntry.event == "profile.corrected",
        )
        .order_by(HistoryEntry.id)
    )
    return [entry.details for entry in db.scalars(query)]


def test_a_correction_is_checked_kept_and_recorded_old_to_new(
    app_client: TestClient, db: Session, owner: Fleet
) -> None:
    login(app_client, owner.order.customer_email)
    before = app_client.get("/api/v1/me/profile").json()
    body = {
        "phone": "699 111 222",
        "city": "Sevilla",
        "street": "Calle Sierpes 4",
        "language": "en",
    }
    headers = {"Idempotency-Key": "correct-profile-1"}
    response = app_client.patch("/api/v1/me/profile", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert {change["field"]: change["new"] for change in response.json()} == {
        "phone": "+34699111222",
        "city": "Sevilla",
        "street": "Calle Sierpes 4",
        "language": "en",
    }
    # A retry with the same key acts once and answers the same.
    again = app_client.patch("/api/v1/me/profile", json=body, headers=headers)
    assert again.json() == response.json()

    after = app_client.get("/api/v1/me/profile").json()
    assert (after["phone"], after["city"], after["national_id"]) == (
        "+34699111222",
        "Sevilla",
        before["national_id"],
    )
    db.expire_all()
    assert db.get_one(User, owner.order.customer_user_id).language == "en"
    (details,) = _corrections(db, owner)
    assert details["changes"] == {
        "phone": {"from": before["phone"], "to": "+34699111222"},
        "city": {"from": before["city"], "to": "Sevilla"},
        "street": {"from": before["street"], "to": "Calle Sierpes 4"},
        "language": {"from": "es", "to": "en"},
    }
    timeline = app_client.get("/api/v1/me/file").json()["timeline"]
    assert "profile.corrected" in [entry["event"] for entry in timeline]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # Each with a good field beside the bad one: nothing at all is written.
        ({"city": "Toledo", "phone": "12"}, "phone"),
        ({"city": "Toledo", "postal_code": "ABC"}, "postal_code"),
        ({"city": "Toledo", "language": "xx"}, "language"),
        ({"city": "Toledo", "first_name": "  "}, "first_name"),
        ({"city": "Toledo", "national_id": "00000000T"}, "national_id"),
        ({"city": "Toledo", "email": "new@example.com"}, "email"),
        ({}, "body"),
    ],
)
def test_a_bad_correction_changes_nothing_and_names_the_field(
    app_client: TestClient, db: Session, owner: Fleet, body: dict[str, str], field: str
) -> None:
    login(app_client, owner.order.customer_email)
    before = app_client.get("/api/v1/me/profile").json()
    response = app_client.patch(
        "/api/v1/me/profile",
        json=body,
        headers={"Idempotency-Key": f"bad-{field}-correction"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    if field == "national_id":
        assert "dealer" in response.json()["message"]
    assert app_client.get("/api/v1/me/profile").json() == before
    assert _corrections(db, owner) == []


def test_a_correction_needs_an_idempotency_key(app_client: TestClient, owner: Fleet) -> None:
    login(app_client, owner.order.customer_email)
    response = app_client.patch("/api/v1/me/profile", json={"city": "Toledo"})
    assert response.status_code == 422
    assert response.json()["field"] == "Idempotency-Key"


def test_the_portal_form_corrects_and_refuses_with_the_reason(
    app_client: TestClient, db: Session, owner: Fleet
) -> None:
    log_in(app_client, owner.order.customer_email)
    page = "/portal/privacy"
    customer = db.get_one(Customer, owner.customer_id)
    assert customer.national_id in app_client.get(page).text  # shown, with "ask your dealer"
    fields = {
        "first_name": "Ana María",
        "last_name": customer.last_name,
        "phone": customer.phone,
        "street": customer.street,
        "postal_code": "41001",
        "city": "Sevilla",
        "language": "es",
    }
    saved = submit(app_client, page, "/portal/privacy/profile", fields, with_key=True)
    assert saved.status_code == 303, saved.text
    db.expire_all()
    assert (customer.first_name, customer.postal_code) == ("Ana María", "41001")
    assert db.get_one(User, owner.order.customer_user_id).full_name.startswith("Ana María ")

    refused = submit(
        app_client, page, "/portal/privacy/profile", {**fields, "phone": "12"}, with_key=True
    )
    assert refused.status_code == 422
    assert "phone" in text_of(refused.text).lower() or "teléfono" in text_of(refused.text).lower()


def test_the_privacy_form_gives_and_withdraws_consent(
    app_client: TestClient, db: Session, owner: Fleet
) -> None:
    log_in(app_client, owner.order.customer_email)
    page = "/portal/privacy"
    html = app_client.get(page).text
    # The service's own use is shown, on and not changeable.
    assert '<input type="checkbox" checked disabled data-consent="service">' in html
    sent = {"location_history": "on", "tailored_offers": "on", "service": ""}
    assert submit(app_client, page, page, sent).status_code == 303
    granted = {c.purpose: c.granted for c in privacy.consents_of(db, owner.customer_id)}
    assert granted == {
        "service": True,
        "location_history": True,
        "driving_style": False,
        "product_improvement": False,
        "tailored_offers": True,
    }
    assert 'name="tailored_offers" checked' in app_client.get(page).text

    assert submit(app_client, page, page, {}).status_code == 303
    db.expire_all()
    withdrawn = {c.purpose: c.granted for c in privacy.consents_of(db, owner.customer_id)}
    assert withdrawn == dict.fromkeys(withdrawn, False) | {"service": True}
