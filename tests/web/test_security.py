"""Web security from the outside: every form's POST needs the session's CSRF token, the session
cookie's flags, the headers every page carries, logging out everywhere, and no secret in a page
or a log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.models import User
from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.history import HistoryEntry
from caas.core.settings import Settings
from caas.seed import DEMO_PASSWORD
from caas.web.pages import NAV, TEMPLATE_DIR
from tests.web.support import csrf_token, log_in, submit

CSRF_REFUSAL = "did not come from this site"
_PARAMETER = re.compile(r"\{[^}]+\}")
_POST_FORM = re.compile(r"<form\b[^>]*method=\"post\"[^>]*>(.*?)</form>", re.S | re.I)


def _page_posts(client: TestClient) -> list[str]:
    """Every POST route of the web pages (not the API), its path parameters filled in."""
    routes = iter_route_contexts(client.app.routes)  # type: ignore[attr-defined]
    return sorted(
        _PARAMETER.sub("1", route.path)
        for route in routes
        if "POST" in (route.methods or ()) and not route.path.startswith("/api/")
    )


def test_every_post_of_the_web_app_refuses_a_form_without_the_token(
    app_client: TestClient,
) -> None:
    log_in(app_client, "operator@caas.example")
    paths = _page_posts(app_client)
    assert {"/login", "/logout", "/logout/everywhere", "/language"} <= set(paths)
    assert len(paths) > 20, paths
    for path in paths:
        response = app_client.post(path, data={"anything": "x"}, follow_redirects=False)
        assert response.status_code == 403, (path, response.status_code)
        assert CSRF_REFUSAL in response.text, path
    # Nothing of it logged the operator out or changed the page: their session still works.
    assert app_client.get("/operator/orders").status_code == 200


def test_every_post_form_in_the_templates_carries_the_token() -> None:
    forms = 0
    for template in sorted(TEMPLATE_DIR.rglob("*.html")):
        for body in _POST_FORM.findall(template.read_text()):
            forms += 1
            assert re.search(r"CSRF_FIELD|csrf_token|ui\.csrf\(\)", body), template.name
    assert forms > 20


def test_no_template_has_an_inline_script_or_event_handler() -> None:
    """The policy allows scripts from the site's own files only; an inline one would not run."""
    for template in sorted(TEMPLATE_DIR.rglob("*.html")):
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text, re.I):
            assert "src=" in tag, (template.name, tag)
        assert not re.search(r"\son[a-z]+=\"", text), template.name


@pytest.mark.parametrize(
    ("email", "role"),
    [
        ("sales.madrid@caas.example", "dealer"),
        ("operator@caas.example", "operator"),
        ("workshop@caas.example", "workshop"),
    ],
)
def test_every_page_carries_the_security_headers(
    app_client: TestClient, email: str, role: str
) -> None:
    pages = ["/login"]
    log_in(app_client, email)
    pages += [href for (owner, links) in NAV.items() if owner.value == role for href, _ in links]
    for path in pages:
        response = app_client.get(path)
        assert response.status_code == 200, path
        policy = dict(
            part.strip().split(" ", 1)
            for part in response.headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == "'self'"
        assert policy["script-src"] == "'self'", path  # no inline script, no eval
        assert policy["frame-ancestors"] == "'none'"
        assert policy["base-uri"] == "'self'"
        assert policy["form-action"] == "'self'"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


@pytest.fixture
def production_client(sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    settings = Settings(
        env="production",
        database_url="postgresql+psycopg://unused/unused",
        public_url="https://caas.example",
        secret_key="a-production-secret-key-of-some-length",
        factory_api_key="f-key",
        factory_webhook_secret="f-secret",
        registry_api_key="r-key",
        payment_api_key="p-key",
        payment_webhook_secret="p-secret",
        mqtt_admin_password="m-secret",
    )
    app = create_app(settings=settings, sessions=sessions, clock=FixedClock())
    with TestClient(app, base_url="https://testserver") as client:
        yield client


def _session_cookie_flags(header: str) -> set[str]:
    assert header.startswith("caas_session="), header
    return {part.strip().split("=")[0].lower() for part in header.split(";")[1:]} | {
        part.strip().lower() for part in header.split(";")[1:] if "samesite" in part.lower()
    }


def test_the_session_cookie_is_httponly_and_samesite_and_secure_in_production(
    production_client: TestClient,
) -> None:
    response = log_in(production_client, "sales.madrid@caas.example")
    flags = _session_cookie_flags(response.headers["set-cookie"])
    assert {"httponly", "secure", "samesite=lax"} <= flags


def test_the_session_cookie_is_not_secure_only_in_the_demo_and_tests(
    app_client: TestClient,
) -> None:
    response = log_in(app_client, "sales.madrid@caas.example")
    flags = _session_cookie_flags(response.headers["set-cookie"])
    assert {"httponly", "samesite=lax"} <= flags
    assert "secure" not in flags


def test_logout_everywhere_ends_the_sessions_of_every_browser(
    app_client: TestClient, sessions: sessionmaker[Session]
) -> None:
    other_browser = TestClient(app_client.app)
    log_in(app_client, "sales.madrid@caas.example")
    log_in(other_browser, "sales.madrid@caas.example")
    someone_else = TestClient(app_client.app)
    log_in(someone_else, "operator@caas.example")
    assert other_browser.get("/intranet/sales", follow_redirects=False).status_code == 200

    page = app_client.get("/intranet/sales").text
    assert 'action="/logout/everywhere"' in page
    response = submit(app_client, "/intranet/sales", "/logout/everywhere", {})
    assert response.headers["location"] == "/login"
    assert "You are logged out on every browser and device." in app_client.get("/login").text

    # The other browser's cookie is refused; this browser is logged out too; others are not.
    refused = other_browser.get("/intranet/sales", follow_redirects=False)
    assert refused.status_code == 303
    assert refused.headers["location"].startswith("/login")
    assert app_client.get("/intranet/sales", follow_redirects=False).status_code == 303
    assert someone_else.get("/operator/orders", follow_redirects=False).status_code == 200
    with sessions() as db:
        user = db.scalars(select(User).where(User.email == "sales.madrid@caas.example")).one()
        entry = db.scalars(
            select(HistoryEntry).where(
                HistoryEntry.subject_type == "user",
                HistoryEntry.subject_id == user.id,
                HistoryEntry.event == "account.logged_out_everywhere",
            )
        ).one()
        assert (entry.actor_kind, entry.actor_user_id) == ("dealer", user.id)
    # Logging in again works as before.
    log_in(other_browser, "sales.madrid@caas.example")
    assert other_browser.get("/intranet/sales", follow_redirects=False).status_code == 200


def test_logout_everywhere_needs_a_session(app_client: TestClient) -> None:
    page = app_client.get("/login").text
    response = app_client.post(
        "/logout/everywhere", data={"csrf_token": csrf_token(page)}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


def test_no_secret_in_pages_or_logs(
    app_client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Each role logs in and opens its pages, an API token is made and used; neither the pages
    nor any log line shows a password, the session cookie, the token or a configured secret."""
    caplog.set_level(logging.DEBUG)
    pages: list[str] = []
    secrets = {DEMO_PASSWORD, settings.secret_key, settings.payment_api_key}
    for role, email in (
        ("dealer", "sales.madrid@caas.example"),
        ("operator", "operator@caas.example"),
        ("workshop", "workshop@caas.example"),
    ):
        client = TestClient(app_client.app)
        log_in(client, email)
        secrets.add(client.cookies["caas_session"])
        pages += [
            client.get(href).text
            for (owner, links) in NAV.items()
            if owner.value == role
            for href, _ in links
        ]
        pages.append(client.get("/login?next=/x").text)
        wrong = submit(client, "/login", "/login", {"email": email, "password": "Wr0ng-secret!"})
        pages.append(wrong.text)
        secrets.add("Wr0ng-secret!")
    made = app_client.post(
        "/api/v1/auth/tokens", json={"email": "operator@caas.example", "password": DEMO_PASSWORD}
    )
    assert made.status_code in (200, 201), made.text
    token = made.json()["token"]
    secrets.add(token)
    used = app_client.get("/api/v1/sales", headers={"Authorization": f"Bearer {token}"})
    assert used.status_code in (200, 403), used.text
    logs = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    for secret in secrets:
        assert len(secret) >= 8
        assert secret not in logs
        for page in pages:
            assert secret not in page
