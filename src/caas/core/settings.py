"""Typed settings read from CAAS_* environment variables."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_SECRET = "demo-secret-change-me"

Environment = Literal["demo", "test", "development", "production"]


class Settings(BaseSettings):
    """Every knob of the platform; defaults are safe for the demo and tests only."""

    model_config = SettingsConfigDict(env_prefix="CAAS_", extra="ignore")

    env: Environment = "demo"
    database_url: str | None = Field(
        default=None,
        description="postgresql+psycopg://... ; when unset, `caas demo` starts an embedded server",
    )
    database_listen_url: str | None = Field(
        default=None,
        description="Where the LISTEN connections go (the outbox's and the live pages' "
        "wake-ups), which need a session of their own: PostgreSQL itself when "
        "`database_url` is a PgBouncer in transaction mode; unset: `database_url`",
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Connections each `caas api` and `caas worker` keeps open to the database",
    )
    database_max_overflow: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="Connections opened beyond the pool under load, closed when given back",
    )
    data_dir: Path = Path(".caas")
    secret_key: str = DEMO_SECRET
    public_url: str = "http://127.0.0.1:8000"
    log_format: Literal["console", "json"] | None = None
    log_level: str = "INFO"

    smtp_url: str = "smtp://127.0.0.1:1025"
    mail_from: str = "caas <no-reply@caas.example>"

    factory_url: str = "http://127.0.0.1:8101"
    factory_api_key: str = DEMO_SECRET
    factory_webhook_secret: str = DEMO_SECRET

    registry_url: str = "http://127.0.0.1:8102"
    registry_api_key: str = DEMO_SECRET

    payment_url: str = "http://127.0.0.1:8103"
    payment_public_url: str | None = None
    payment_api_key: str = DEMO_SECRET
    payment_webhook_secret: str = DEMO_SECRET
    payment_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long to wait for the payment provider's answer"
    )

    mqtt_url: str | None = Field(
        default=None,
        description="mqtt://user:password@host:port of the broker, with the platform's service "
        "account; when unset, `caas demo` starts its own broker",
    )
    mqtt_admin_username: str = Field(
        default="caas-admin",
        description="The broker account that creates the cars' accounts (Mosquitto's dynamic "
        "security administrator)",
    )
    mqtt_admin_password: str = DEMO_SECRET
    mqtt_ca_file: Path | None = Field(
        default=None,
        description="The CA certificates (PEM) that sign the broker's certificate, for an "
        "mqtts:// `mqtt_url`; unset: the system's CAs",
    )

    vehicle_sim_url: str | None = Field(
        default=None,
        description="Where the customer's browser reaches the car simulator's local key "
        "endpoint (standing in for Bluetooth) for the digital key's unlock demo; unset: no demo",
    )

    activation_token_hours: int = 72
    login_max_failures: int = 5
    login_window_minutes: int = 15
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or networks (CIDR) of the reverse proxies in "
        "front of `caas api`, whose `X-Forwarded-For` (the client's address, which the login and "
        "activation limits count) and `X-Forwarded-Proto` are believed; empty: nobody's are",
    )
    session_cookie_secure: bool | None = Field(
        default=None,
        description="Send the session cookie over HTTPS only; on by default outside demo/tests",
    )
    outbox_max_attempts: int = 12
    ota_keys_dir: Path | None = Field(
        default=None,
        description="The manifest signing key, its certificate and the root's public key "
        "(`caas keys`); unset: `data_dir`/keys",
    )
    ota_resend_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A configuration the car has not answered is published again after this "
        "long, then after twice as long each time (at most an hour)",
    )
    locales_dir: Path | None = Field(
        default=None,
        description="A directory of more page languages (`<lang>.po` gettext catalogs), read "
        "at start over the built-in ones",
    )
    worker_threads: int = Field(
        default=2, ge=1, le=64, description="Threads delivering the outbox in each worker"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str) -> str:
        """Each an IP address or network: uvicorn would take anything else (`*` included, which
        believes any caller) as a name it never matches, or as trusting everyone."""
        for item in _items(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (such as 10.0.0.0/8)"
                ) from None
        return value

    @field_validator("mqtt_ca_file")
    @classmethod
    def _ca_file_is_readable(cls, value: Path | None) -> Path | None:
        """Checked at start: a mistyped path would otherwise only show as every connection to
        the broker failing, long after the process started."""
        if value is not None and not value.is_file():
            raise ValueError(f"{str(value)!r} is not a file (the broker's CA certificates, PEM)")
        return value

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.env in ("demo", "test"):
            return self
        for name in (
            "secret_key",
            "factory_api_key",
            "factory_webhook_secret",
            "registry_api_key",
            "payment_api_key",
            "payment_webhook_secret",
            "mqtt_admin_password",
        ):
            if getattr(self, name) == DEMO_SECRET:
                raise ValueError(f"CAAS_{name.upper()} must be set outside the demo and tests")
        if self.database_url is None:
            raise ValueError("CAAS_DATABASE_URL must be set outside the demo and tests")
        return self

    @property
    def secure_cookies(self) -> bool:
        if self.session_cookie_secure is not None:
            return self.session_cookie_secure
        return self.env not in ("demo", "test")

    @property
    def forwarded_allow_ips(self) -> list[str]:
        """The proxies whose forwarded headers uvicorn believes (its `forwarded_allow_ips`): an
        empty list believes nobody's, where uvicorn by itself believes 127.0.0.1's, so anything
        running on the machine could claim any address."""
        return _items(self.trusted_proxies)

    @property
    def ota_keys_path(self) -> Path:
        """Where the platform loads its manifest signing material from."""
        return self.ota_keys_dir if self.ota_keys_dir is not None else self.data_dir / "keys"

    @property
    def browser_payment_url(self) -> str:
        """Where the customer's browser reaches the payment provider to tokenise a card."""
        return self.payment_public_url or self.payment_url


def _items(comma_separated: str) -> list[str]:
    return [item.strip() for item in comma_separated.split(",") if item.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
