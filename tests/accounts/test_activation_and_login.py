"""Accounts: the activation link, logins, rate limiting and API tokens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.models import LoginAttempt
from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.db import make_session_factory
from caas.core.settings import Settings
from caas.seed import DEMO_PASSWORD
from caas.worker import build_relay
from tests.conftest import SmtpInbox
from tests.factories import sale_payload

NEW_PASSWORD = "a-long-chosen-passphrase"


def _sell(client: TestClient) -> str:
    client.post(
        "/api/v1/auth/login",
        json={"email": "sales.madrid@caas.example", "password": DEMO_PASSWORD},
    )
    payload = sale_payload()
    response = client.post(
        "/api/v1/sales", json=payload, headers={"Idempotency-Key": "activation-sale-1"}
    )
    assert response.status_code == 201, response.text
    client.post("/api/v1/auth/logout")
    email: str = payload["customer"]["email"]
    return email


def _activation_token(smtp: SmtpInbox, email: str) -> str:
    mails = smtp.to(email)
    assert mails, f"no e-mail to {email}"
    body = smtp.text_of(mails[-1])
    match = re.search(r"/activate\?token=([\w-]+)", body)
    assert match is not None
    return match.group(1)


def _deliver(settings: Settings, sessions: sessionmaker[Session], clock: FixedClock) -> None:
    build_relay(settings, sessions, clock).run_once()


def test_activation_link_sets_password_once(
    app_client: TestClient,
    smtp: SmtpInbox,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
) -> None:
    email = _sell(app_client)
    _deliver(settings, sessions, clock)
    token = _activation_token(smtp, email)

    short = app_client.post("/api/v1/auth/activate", json={"token": token, "password": "short"})
    assert short.status_code == 422
    assert short.json()["field"] == "password"

    done = app_client.post("/api/v1/auth/activate", json={"token": token, "password": NEW_PASSWORD})
    assert done.status_code == 200
    again = app_client.post(
        "/api/v1/auth/activate", json={"token": token, "password": NEW_PASSWORD}
    )
    assert again.status_code == 422
    assert again.json()["code"] == "account.activation_invalid"

    login = app_client.post("/api/v1/auth/login", json={"email": email, "password": NEW_PASSWORD})
    assert login.status_code == 200
    assert login.json()["role"] == "customer"


def test_activation_link_expires_after_72_hours_and_can_be_resent(
    app_client: TestClient,
    smtp: SmtpInbox,
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
) -> None:
    email = _sell(app_client)
    _deliver(settings, sessions, clock)
    old_token = _activation_token(smtp, email)
    clock.advance(timedelta(hours=72, seconds=1))
    expired = app_client.post(
        "/api/v1/auth/activate", json={"token": old_token, "password": NEW_PASSWORD}
    )
    assert expired.json()["code"] == "account.activation_expired"

    assert (
        app_client.post("/api/v1/auth/activation-resend", json={"email": email}).status_code == 202
    )
    _deliver(settings, sessions, clock)
    new_token = _activation_token(smtp, email)
    assert new_token != old_token
    ok = app_client.post(
        "/api/v1/auth/activate", json={"token": new_token, "password": NEW_PASSWORD}
    )
    assert ok.status_code == 200


def test_resend_for_unknown_email_answers_the_same(app_client: TestClient, smtp: SmtpInbox) -> None:
    response = app_client.post("/api/v1/auth/activation-resend", json={"email": "nobody@x.org"})
    assert response.status_code == 202


@pytest.fixture
def committing_client(
    engine: Engine, settings: Settings, clock: FixedClock
) -> Iterator[TestClient]:
    """The app on real transactions: a failed login's rollback must not erase its record."""
    app = create_app(settings=settings, sessions=make_session_factory(engine), clock=clock)
    with TestClient(app) as client:
        yield client
    with engine.begin() as connection:
        connection.execute(delete(LoginAttempt).where(LoginAttempt.email == LYON))


LYON = "sales.lyon@caas.example"


def test_too_many_failed_logins_are_refused_for_a_while(
    committing_client: TestClient, clock: FixedClock
) -> None:
    wrong = {"email": LYON, "password": "wrong-password"}
    for _ in range(5):
        assert committing_client.post("/api/v1/auth/login", json=wrong).status_code == 401
    right = {"email": LYON, "password": DEMO_PASSWORD}
    assert committing_client.post("/api/v1/auth/login", json=right).status_code == 429
    clock.advance(timedelta(minutes=16))
    assert committing_client.post("/api/v1/auth/login", json=right).status_code == 200


def test_bearer_token_authenticates_and_bad_token_is_refused(app_client: TestClient) -> None:
    created = app_client.post(
        "/api/v1/auth/tokens",
        json={"email": "operator@caas.example", "password": DEMO_PASSWORD, "name": "cli"},
    )
    assert created.status_code == 201
    token = created.json()["token"]
    me = app_client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["role"] == "operator"
    bad = app_client.get("/api/v1/me", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.json()["code"] == "auth.invalid_token"
