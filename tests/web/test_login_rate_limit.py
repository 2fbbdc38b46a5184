"""The login form's refusal after too many failures says, in the page's language, how many
minutes to wait (the accounts service's own message is English)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.seed import DEMO_PASSWORD
from tests.web.support import submit, text_of

EMAIL = "operator@caas.example"


def fail_until_refused(client: TestClient, settings: Settings) -> httpx.Response:
    """Wrong passwords up to the limit, then the right one: the refused page."""
    for _ in range(settings.login_max_failures):
        wrong = submit(client, "/login", "/login", {"email": EMAIL, "password": "not-it"})
        assert wrong.status_code == 401
    return submit(client, "/login", "/login", {"email": EMAIL, "password": DEMO_PASSWORD})


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", "too many failed attempts; try again in 15 minutes"),
        ("es", "Demasiados intentos fallidos; vuelve a intentarlo dentro de 15 minutos"),
        ("fr", "Trop de tentatives échouées ; réessayez dans 15 minutes"),
    ],
)
def test_the_rate_limit_message_is_in_the_pages_language(
    app_client: TestClient, settings: Settings, language: str, message: str
) -> None:
    chosen = submit(app_client, "/login", "/language", {"lang": language, "next": "/login"})
    assert chosen.status_code == 303

    refused = fail_until_refused(app_client, settings)

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(settings.login_window_minutes * 60)
    assert f'<html lang="{language}">' in refused.text
    assert 'data-code="auth.rate_limited"' in refused.text
    assert message in text_of(refused.text)


def test_the_minutes_are_those_left_to_wait(
    app_client: TestClient, settings: Settings, clock: FixedClock
) -> None:
    submit(app_client, "/login", "/language", {"lang": "fr", "next": "/login"})
    fail_until_refused(app_client, settings)

    clock.advance(timedelta(minutes=settings.login_window_minutes - 3, seconds=30))
    again = submit(app_client, "/login", "/login", {"email": EMAIL, "password": DEMO_PASSWORD})
    assert again.headers["Retry-After"] == "150"
    assert "réessayez dans 3 minutes" in text_of(again.text)

    clock.advance(timedelta(minutes=2))
    last = submit(app_client, "/login", "/login", {"email": EMAIL, "password": DEMO_PASSWORD})
    assert last.headers["Retry-After"] == "30"
    assert "Trop de tentatives échouées ; réessayez dans une minute" in text_of(last.text)
