"""Guessing passwords and activation tokens is slowed, logged and kept, tried from outside: the
application served by uvicorn over HTTP on a database whose transactions really commit (a
failed login's request rolls back; its record must not).

Callers are told apart by their address: uvicorn trusts `X-Forwarded-For` from 127.0.0.1 (its
default `forwarded_allow_ips`), so each test plays clients at addresses of its own, and the
database's other users (at other addresses, with other accounts) never count towards its limits.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import ActivationToken, LoginAttempt, Role, User
from caas.accounts.security import token_digest
from caas.accounts.service import MAX_FAILURES_PER_IP, create_user
from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from tests.conftest import SmtpInbox
from tests.security.conftest import JsonLogs
from tests.servers import serving
from tests.vehicles.support import CommittedDatabase, committed

__all__ = ["committed"]

PASSWORD = "the-right-passphrase"
WRONG = "a-wrong-guess-123"
_addresses = itertools.count(secrets.randbelow(200) * 1000)


def fresh_ip() -> str:
    n = next(_addresses)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@dataclass
class Platform:
    url: str
    clock: FixedClock
    settings: Settings
    database: CommittedDatabase

    def client(self, ip: str) -> httpx.Client:
        """A caller at address `ip`."""
        return httpx.Client(base_url=self.url, headers={"X-Forwarded-For": ip}, timeout=10)

    def account(self, *, activated: bool = True) -> str:
        email = f"guess-{secrets.token_hex(4)}@example.com"
        self.database.run(
            lambda session: create_user(
                session,
                email=email,
                full_name="Target Person",
                role=Role.CUSTOMER,
                password=PASSWORD if activated else None,
                now=self.clock.now(),
            )
        )
        return email

    def attempts(self, **where: str) -> list[LoginAttempt]:
        """The kept attempts matching `where` (column = value), read afresh."""
        query = select(LoginAttempt).order_by(LoginAttempt.id)
        for column, value in where.items():
            query = query.where(getattr(LoginAttempt, column) == value)
        return self.database.run(lambda session: list(session.scalars(query)))


@pytest.fixture
def platform(committed: CommittedDatabase, smtp_server: SmtpInbox) -> Iterator[Platform]:
    settings = Settings(
        env="test",
        database_url=committed.url,
        smtp_url=f"smtp://127.0.0.1:{smtp_server.port}",
        public_url="http://testserver",
    )
    clock = FixedClock()
    app = create_app(settings=settings, sessions=committed.sessions, clock=clock)
    with serving(app) as server:
        yield Platform(server.url, clock, settings, committed)


def _retry_after(response: httpx.Response, settings: Settings) -> int:
    """The seconds a 429 tells the caller to wait (the API's answer says why in its code)."""
    assert response.status_code == 429, response.text
    if response.headers["content-type"].startswith("application/json"):
        assert response.json()["code"] == "auth.rate_limited"
    seconds = int(response.headers["Retry-After"])
    assert 0 < seconds <= settings.login_window_minutes * 60
    return seconds


def test_failed_api_logins_are_kept_logged_and_slowed_per_account(
    platform: Platform, json_logs: JsonLogs
) -> None:
    email = platform.account()
    limit = platform.settings.login_max_failures
    with platform.client(fresh_ip()) as attacker:
        for _ in range(limit):
            wrong = attacker.post("/api/v1/auth/login", json={"email": email, "password": WRONG})
            assert wrong.status_code == 401
            platform.clock.advance(timedelta(seconds=10))
        # The account is closed now, even to the right password, and from another address.
        refused = attacker.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        wait = _retry_after(refused, platform.settings)
    with platform.client(fresh_ip()) as owner:
        elsewhere = owner.post("/api/v1/auth/tokens", json={"email": email, "password": PASSWORD})
        assert _retry_after(elsewhere, platform.settings) == wait

    # Kept, each in its own committed transaction although its request rolled back.
    kept = platform.attempts(email=email)
    assert [(a.kind, a.succeeded) for a in kept] == [("login", False)] * limit
    # Logged: one structured line per failure naming the account, never the password.
    failures = json_logs.events("auth.login_failed")
    assert [line["email"] for line in failures] == [email] * limit
    assert {line["reason"] for line in failures} == {"wrong_password"}
    assert json_logs.events("auth.throttled")
    assert WRONG not in json_logs.text() and PASSWORD not in json_logs.text()

    # When the oldest failure has left the window, the owner gets in.
    platform.clock.advance(timedelta(seconds=wait))
    with platform.client(fresh_ip()) as owner:
        ok = owner.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert ok.status_code == 200, ok.text
    assert platform.attempts(email=email)[-1].succeeded


def test_one_address_guessing_many_accounts_is_slowed(platform: Platform) -> None:
    """Spraying one password over many accounts: each account stays under its own limit, the
    address does not."""
    ip = fresh_ip()
    accounts = [platform.account() for _ in range(MAX_FAILURES_PER_IP // 2)]
    with platform.client(ip) as attacker:
        for email in accounts * 2:
            wrong = attacker.post("/api/v1/auth/login", json={"email": email, "password": WRONG})
            assert wrong.status_code == 401, wrong.text
        fresh = platform.account()
        refused = attacker.post("/api/v1/auth/login", json={"email": fresh, "password": PASSWORD})
        _retry_after(refused, platform.settings)
    assert len(platform.attempts(ip=ip)) == MAX_FAILURES_PER_IP
    # Someone else, at another address, still logs in to an account the attacker tried.
    with platform.client(fresh_ip()) as owner:
        ok = owner.post("/api/v1/auth/login", json={"email": accounts[0], "password": PASSWORD})
        assert ok.status_code == 200, ok.text


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _post_login_form(browser: httpx.Client, email: str, password: str) -> httpx.Response:
    page = browser.get("/login")
    token = _CSRF.search(page.text)
    assert token is not None
    return browser.post(
        "/login",
        data={"csrf_token": token.group(1), "email": email, "password": password},
        follow_redirects=False,
    )


def test_the_login_form_is_slowed_like_the_api(platform: Platform, json_logs: JsonLogs) -> None:
    email = platform.account()
    with platform.client(fresh_ip()) as browser:
        for _ in range(platform.settings.login_max_failures):
            assert _post_login_form(browser, email, WRONG).status_code == 401
        refused = _post_login_form(browser, email, PASSWORD)
        _retry_after(refused, platform.settings)
        assert 'data-code="auth.rate_limited"' in refused.text
        assert PASSWORD not in refused.text
    assert len(platform.attempts(email=email)) == platform.settings.login_max_failures
    assert len(json_logs.events("auth.login_failed")) == platform.settings.login_max_failures
    assert WRONG not in json_logs.text()


def test_guessed_activation_tokens_are_kept_logged_and_slowed_per_address(
    platform: Platform, json_logs: JsonLogs
) -> None:
    ip = fresh_ip()
    guesses = [secrets.token_urlsafe(32) for _ in range(MAX_FAILURES_PER_IP)]
    with platform.client(ip) as attacker:
        for guess in guesses[:-1]:
            body = {"token": guess, "password": PASSWORD}
            answer = attacker.post("/api/v1/auth/activate", json=body)
            assert answer.status_code == 422
            assert answer.json()["code"] == "account.activation_invalid"
        # The web form counts towards the same address's limit.
        page = attacker.get("/activate", params={"token": guesses[-1]})
        token = _CSRF.search(page.text)
        assert token is not None
        form = {
            "csrf_token": token.group(1),
            "token": guesses[-1],
            "password": PASSWORD,
            "password_again": PASSWORD,
        }
        assert attacker.post("/activate", data=form).status_code == 422

        # Now even a genuine link is refused from this address, on both faces.
        genuine = secrets.token_urlsafe(32)
        email = platform.account(activated=False)
        platform.database.run(lambda session: _add_link(session, email, genuine, platform))
        refused = attacker.post(
            "/api/v1/auth/activate", json={"token": genuine, "password": PASSWORD}
        )
        _retry_after(refused, platform.settings)
        form["token"] = genuine
        _retry_after(attacker.post("/activate", data=form), platform.settings)

    kept = platform.attempts(ip=ip)
    assert [(a.kind, a.email, a.succeeded) for a in kept] == [("activation", "", False)] * len(
        guesses
    )
    logged = json_logs.events("auth.activation_failed")
    assert len(logged) == len(guesses) and {line["ip"] for line in logged} == {ip}
    text = json_logs.text()
    assert not [guess for guess in guesses if guess in text]
    assert genuine not in text and PASSWORD not in text

    # The owner, at home, activates with the genuine link.
    with platform.client(fresh_ip()) as owner:
        ok = owner.post("/api/v1/auth/activate", json={"token": genuine, "password": PASSWORD})
        assert ok.status_code == 200, ok.text


def _add_link(session: Session, email: str, token: str, platform: Platform) -> None:
    """A genuine activation link of the account, as `send_activation` stores it."""
    user = session.scalars(select(User).where(User.email == email)).one()
    now = platform.clock.now()
    session.add(
        ActivationToken(
            user_id=user.id,
            token_hash=token_digest(token),
            created_at=now,
            expires_at=now + timedelta(hours=72),
        )
    )
