"""Logging in and out, where each role lands, CSRF, activation and the page language."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.sales import service as sales
from caas.sales.schemas import CommercialPlan, CustomerIdentity
from caas.seed import DEMO_PASSWORD
from caas.worker import build_relay
from tests.conftest import SmtpInbox
from tests.factories import customer_payload, salesperson
from tests.web.support import csrf_token, log_in, submit, text_of


@pytest.mark.parametrize(
    ("email", "home"),
    [
        ("sales.madrid@caas.example", "/intranet/sales"),
        ("operator@caas.example", "/operator/orders"),
        ("workshop@caas.example", "/workshop"),
    ],
)
def test_login_lands_each_role_on_its_own_area(
    app_client: TestClient, email: str, home: str
) -> None:
    assert log_in(app_client, email).headers["location"] == home
    assert app_client.get("/", follow_redirects=False).headers["location"] == home


def test_anonymous_visitor_is_sent_to_login_and_comes_back_after(app_client: TestClient) -> None:
    assert app_client.get("/", follow_redirects=False).headers["location"] == "/login"
    response = app_client.get("/intranet/sales?state=awaiting_deposit", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/intranet/sales%3Fstate%3Dawaiting_deposit"
    page = app_client.get(response.headers["location"]).text
    assert 'name="next" value="/intranet/sales?state=awaiting_deposit"' in page
    landed = app_client.post(
        "/login",
        data={
            "csrf_token": csrf_token(page),
            "email": "sales.madrid@caas.example",
            "password": DEMO_PASSWORD,
            "next": "/intranet/sales?state=awaiting_deposit",
        },
        follow_redirects=False,
    )
    assert landed.headers["location"] == "/intranet/sales?state=awaiting_deposit"


def test_login_never_redirects_off_the_site(app_client: TestClient) -> None:
    response = submit(
        app_client,
        "/login",
        "/login",
        {
            "email": "sales.madrid@caas.example",
            "password": DEMO_PASSWORD,
            "next": "//evil.example/x",
        },
    )
    assert response.headers["location"] == "/intranet/sales"


def test_wrong_password_says_so_and_keeps_the_email(app_client: TestClient) -> None:
    response = submit(
        app_client,
        "/login",
        "/login",
        {"email": "sales.madrid@caas.example", "password": "not-the-password"},
    )
    assert response.status_code == 401
    assert "wrong e-mail or password" in response.text
    assert 'value="sales.madrid@caas.example"' in response.text
    assert "not-the-password" not in response.text
    assert app_client.get("/intranet/sales", follow_redirects=False).status_code == 303


def test_too_many_failures_show_the_rate_limit_message(
    app_client: TestClient, settings: Settings
) -> None:
    for _ in range(settings.login_max_failures):
        submit(app_client, "/login", "/login", {"email": "operator@caas.example", "password": "x"})
    response = submit(
        app_client,
        "/login",
        "/login",
        {"email": "operator@caas.example", "password": DEMO_PASSWORD},
    )
    assert response.status_code == 429
    assert 'data-code="auth.rate_limited"' in response.text
    assert "too many failed attempts; try again in 15 minutes" in response.text


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_a_post_without_the_sessions_token_is_refused(
    app_client: TestClient, token: str | None
) -> None:
    app_client.get("/login")  # the session has a token; the post does not carry it
    data = {"email": "sales.madrid@caas.example", "password": DEMO_PASSWORD}
    if token is not None:
        data["csrf_token"] = token
    response = app_client.post("/login", data=data, follow_redirects=False)
    assert response.status_code == 403
    assert "did not come from this site" in response.text
    assert app_client.get("/intranet/sales", follow_redirects=False).status_code == 303


def test_logging_in_renews_the_token_and_logout_ends_the_session(app_client: TestClient) -> None:
    before = csrf_token(app_client.get("/login").text)
    log_in(app_client, "sales.madrid@caas.example")
    page = app_client.get("/intranet/sales").text
    assert csrf_token(page) != before
    refused = app_client.post("/logout", data={"csrf_token": before}, follow_redirects=False)
    assert refused.status_code == 403
    response = app_client.post(
        "/logout", data={"csrf_token": csrf_token(page)}, follow_redirects=False
    )
    assert response.headers["location"] == "/login"
    assert "You are logged out." in app_client.get("/login").text
    assert app_client.get("/intranet/sales", follow_redirects=False).status_code == 303


def test_a_role_cannot_open_another_roles_pages(app_client: TestClient) -> None:
    log_in(app_client, "sales.madrid@caas.example")
    for path in ("/operator/orders", "/portal/orders", "/operator/catalog"):
        response = app_client.get(path)
        assert response.status_code == 403, path
        assert "<h1>Not allowed</h1>" in response.text


def _activation_token(smtp: SmtpInbox, email: str) -> str:
    (mail,) = smtp.to(email)
    body = next(part for part in mail.walk() if part.get_content_type() == "text/plain")
    text = body.get_payload(decode=True).decode()
    return text.split("/activate?token=")[1].split()[0]


def _new_customer(
    db: Session, sessions: sessionmaker[Session], settings: Settings, clock: FixedClock
) -> str:
    """A sale to a new customer, whose activation e-mail has been sent."""
    identity = CustomerIdentity(**customer_payload("ES"))
    sales.create_sale(
        db,
        salesperson=salesperson(db, "ES"),
        identity=identity,
        plan=CommercialPlan(platform="AURA", service_period_months=48, maintenance_included=False),
        settings=settings,
        now=clock.now(),
    )
    db.commit()
    build_relay(settings, sessions, clock).run_once()
    return identity.email


def test_activation_page_sets_the_password_and_logs_the_customer_in(
    app_client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    smtp: SmtpInbox,
) -> None:
    email = _new_customer(db, sessions, settings, clock)
    token = _activation_token(smtp, email)

    page = app_client.get(f"/activate?token={token}")
    assert page.status_code == 200
    assert "Choose your password" in page.text or "Elige tu contraseña" in page.text
    mismatch = submit(
        app_client,
        f"/activate?token={token}",
        "/activate",
        {"token": token, "password": "a-long-passphrase", "password_again": "another-one!"},
    )
    assert mismatch.status_code == 422
    assert 'id="password_again-error"' in mismatch.text
    short = submit(
        app_client,
        f"/activate?token={token}",
        "/activate",
        {"token": token, "password": "short", "password_again": "short"},
    )
    assert short.status_code == 422
    assert 'id="password-error"' in short.text

    done = submit(
        app_client,
        f"/activate?token={token}",
        "/activate",
        {"token": token, "password": "a-long-passphrase", "password_again": "a-long-passphrase"},
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/portal/orders"
    orders = app_client.get("/portal/orders")
    assert orders.status_code == 200
    assert "Mis pedidos" in orders.text  # the customer's language is Spanish

    again = submit(
        app_client,
        f"/activate?token={token}",
        "/activate",
        {"token": token, "password": "a-long-passphrase", "password_again": "a-long-passphrase"},
    )
    assert again.status_code == 422
    assert "was already used" in again.text
    assert 'href="/activate/resend"' in again.text


def test_an_expired_link_says_so_and_a_new_one_can_be_asked_for(
    app_client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    smtp: SmtpInbox,
) -> None:
    email = _new_customer(db, sessions, settings, clock)
    token = _activation_token(smtp, email)
    clock.advance(timedelta(hours=settings.activation_token_hours, minutes=1))
    expired = submit(
        app_client,
        f"/activate?token={token}",
        "/activate",
        {"token": token, "password": "a-long-passphrase", "password_again": "a-long-passphrase"},
    )
    assert "has expired" in expired.text

    asked = submit(app_client, "/activate/resend", "/activate/resend", {"email": email})
    assert asked.headers["location"] == "/login"
    assert "a new link is on its way" in app_client.get("/login").text
    unknown = submit(app_client, "/activate/resend", "/activate/resend", {"email": "x@y.example"})
    assert unknown.headers["location"] == "/login"  # the same answer for an unknown e-mail
    build_relay(settings, sessions, clock).run_once()
    assert len(smtp.to(email)) == 2


def test_the_activation_page_without_a_token_offers_a_new_link(app_client: TestClient) -> None:
    page = app_client.get("/activate")
    assert "not valid" in page.text
    assert 'href="/activate/resend"' in page.text


def test_the_reader_can_switch_the_pages_to_spanish(app_client: TestClient) -> None:
    page = app_client.get("/login")
    assert "<h1>Log in</h1>" in page.text
    switched = app_client.post(
        "/language",
        data={"csrf_token": csrf_token(page.text), "lang": "es", "next": "/login"},
        follow_redirects=False,
    )
    assert switched.headers["location"] == "/login"
    assert "<h1>Entrar</h1>" in app_client.get("/login").text
    log_in(app_client, "operator@caas.example")
    assert "Catálogo" in text_of(app_client.get("/operator/catalog").text)
