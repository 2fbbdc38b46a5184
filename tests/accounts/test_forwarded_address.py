"""The address the login and activation limits count is the connection's, served as `caas api`
serves (uvicorn, its proxy-headers middleware configured from `CAAS_TRUSTED_PROXIES`): a caller
cannot pick another by sending `X-Forwarded-For`, and a trusted proxy's forwarded one counts."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from pydantic import ValidationError
from sqlalchemy import select

from caas.accounts.models import LoginAttempt
from caas.app import create_app
from caas.cli import api_server_options
from caas.core.clock import FixedClock
from caas.core.net import free_port
from caas.core.settings import Settings
from tests.vehicles.support import CommittedDatabase, committed

__all__ = ["committed"]

FORGED = "203.0.113.77"


@contextmanager
def caas_api(settings: Settings, database: CommittedDatabase) -> Iterator[str]:
    """The application served by uvicorn with `caas api`'s options, in a thread; its URL."""
    app = create_app(settings=settings, sessions=database.sessions, clock=FixedClock())
    options = api_server_options("127.0.0.1", free_port(), settings)
    server = uvicorn.Server(uvicorn.Config(app, **{**options, "log_level": "warning"}))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{options['port']}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def counted_address(url: str, database: CommittedDatabase, forwarded_for: str) -> str:
    """The address a failed login is kept under, sent from here claiming `forwarded_for`."""
    email = f"nobody-{secrets.token_hex(4)}@example.com"
    answer = httpx.post(
        f"{url}/api/v1/auth/login",
        json={"email": email, "password": "a-wrong-guess-123"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    assert answer.status_code == 401, answer.text
    return database.run(
        lambda session: session.scalars(
            select(LoginAttempt.ip).where(LoginAttempt.email == email)
        ).one()
    )


def test_a_forged_forwarded_address_from_an_untrusted_peer_is_not_counted(
    committed: CommittedDatabase,
) -> None:
    settings = Settings(env="test", database_url=committed.url)
    assert settings.forwarded_allow_ips == []  # by default nobody's forwarded header counts
    with caas_api(settings, committed) as url:
        assert counted_address(url, committed, FORGED) == "127.0.0.1"


def test_a_trusted_proxys_forwarded_address_is_counted(committed: CommittedDatabase) -> None:
    settings = Settings(env="test", database_url=committed.url, trusted_proxies="127.0.0.1")
    with caas_api(settings, committed) as url:
        assert counted_address(url, committed, FORGED) == FORGED
        # The client a chain of proxies forwards is the last address no trusted proxy has.
        assert counted_address(url, committed, f"198.51.100.1, {FORGED}") == FORGED


@pytest.mark.parametrize("value", ["*", "proxy.internal", "10.0.0.0/33"])
def test_trusted_proxies_are_addresses_or_networks(value: str) -> None:
    with pytest.raises(ValidationError, match="not an IP address or network"):
        Settings(env="test", trusted_proxies=value)
    networks = Settings(env="test", trusted_proxies=" 10.0.0.0/8, 192.168.1.7 ,::1")
    assert networks.forwarded_allow_ips == ["10.0.0.0/8", "192.168.1.7", "::1"]
