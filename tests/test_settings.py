"""Settings: safe defaults for the demo and tests only; production must bring its secrets."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from caas.app import create_app
from caas.core.settings import Settings
from caas.seed import DEMO_PASSWORD

SECRETS = {
    name: f"a-real-{name}-value"
    for name in (
        "secret_key",
        "factory_api_key",
        "factory_webhook_secret",
        "registry_api_key",
        "payment_api_key",
        "payment_webhook_secret",
        "mqtt_admin_password",
    )
}


def test_production_refuses_the_demo_secrets() -> None:
    with pytest.raises(ValidationError, match="CAAS_SECRET_KEY"):
        Settings(env="production", database_url="postgresql://db/caas")


def test_production_needs_a_database_url() -> None:
    with pytest.raises(ValidationError, match="CAAS_DATABASE_URL"):
        Settings(env="production", **SECRETS)


def test_settings_come_from_caas_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAAS_FACTORY_URL", "http://factory.example:9000")
    assert Settings().factory_url == "http://factory.example:9000"


def test_session_cookie_is_secure_and_http_only_in_production(
    sessions: sessionmaker[Session],
) -> None:
    settings = Settings(env="production", database_url="postgresql://db/caas", **SECRETS)
    app = create_app(settings=settings, sessions=sessions)
    with TestClient(app, base_url="https://testserver") as client:
        response = client.post(
            "/api/v1/auth/login",
            json={"email": "operator@caas.example", "password": DEMO_PASSWORD},
        )
    cookie = response.headers["set-cookie"].lower()
    assert "secure" in cookie
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
