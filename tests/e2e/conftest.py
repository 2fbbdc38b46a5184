"""The running world the journeys walk through: the platform's API and its worker on a scratch
PostgreSQL, the factory, registry and payment provider simulators as HTTP servers, and a real
SMTP server that receives the customer's e-mails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from caas.app import create_app
from caas.core.clock import SystemClock
from caas.core.db import make_engine, make_session_factory
from caas.core.net import free_port
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.ota.keys import SigningMaterial
from caas.worker import Worker, build_relay, build_worker
from caas_sim.factory import create_app as factory_app
from caas_sim.payments import create_app as payments_app
from caas_sim.registry import create_app as registry_app
from tests.conftest import ScratchDatabases, SmtpInbox
from tests.e2e.browser import LAUNCH_ARGS, axe_source, chromium_or_skip
from tests.mqtt import mqtt_broker
from tests.vehicles.support import signing

__all__ = ["mqtt_broker", "signing"]
from tests.servers import ServerThread


@dataclass
class World:
    platform: str
    factory: str
    payments: str
    registry: str
    smtp: SmtpInbox
    sessions: sessionmaker[Session]


@pytest.fixture
def world(scratch_databases: ScratchDatabases, smtp: SmtpInbox) -> Iterator[World]:
    """Every piece on its own port, the factory advancing only when a test says so."""
    with running_world(scratch_databases, smtp) as running:
        yield running


@pytest.fixture(scope="module")
def shared_world(scratch_databases: ScratchDatabases, smtp_server: SmtpInbox) -> Iterator[World]:
    """One world for all the tests of a module (the browser tests of each role's pages)."""
    with running_world(scratch_databases, smtp_server) as running:
        yield running


@pytest.fixture
def connected_world(
    scratch_databases: ScratchDatabases,
    smtp: SmtpInbox,
    mqtt_broker: LocalBroker,
    signing: SigningMaterial,
) -> Iterator[World]:
    """The world with a real MQTT broker: cars born at the factory get their broker account
    flashed, and the worker's bridge sends them their signed configurations."""
    with running_world(scratch_databases, smtp, mqtt_broker) as running:
        yield running


@contextmanager
def running_world(
    scratch_databases: ScratchDatabases, smtp: SmtpInbox, mqtt: LocalBroker | None = None
) -> Iterator[World]:
    engine = make_engine(scratch_databases.create())
    sessions = make_session_factory(engine)
    ports = {name: free_port() for name in ("platform", "factory", "payments", "registry")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    settings = Settings(
        env="test",
        public_url=urls["platform"],
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        factory_url=urls["factory"],
        registry_url=urls["registry"],
        payment_url=urls["payments"],
        # Where the customer's browser tokenises a card: the sandbox itself, on this machine.
        payment_public_url=urls["payments"],
    )
    if mqtt is not None:
        settings = settings.model_copy(
            update={
                "mqtt_url": mqtt.service_url,
                "mqtt_admin_username": mqtt.admin_username,
                "mqtt_admin_password": mqtt.admin_password,
            }
        )
    servers = [
        ServerThread(
            create_app(settings=settings, sessions=sessions, clock=SystemClock()),
            ports["platform"],
        ),
        ServerThread(
            factory_app(
                webhook_url=f"{urls['platform']}/api/v1/factory/events",
                webhook_secret=settings.factory_webhook_secret,
                api_key=settings.factory_api_key,
                auto_advance=False,
            ),
            ports["factory"],
        ),
        ServerThread(
            payments_app(
                api_key=settings.payment_api_key,
                webhook_url=f"{urls['platform']}/api/v1/webhooks/payments",
                webhook_secret=settings.payment_webhook_secret,
            ),
            ports["payments"],
        ),
        ServerThread(registry_app(api_key=settings.registry_api_key), ports["registry"]),
    ]
    for server in servers:
        server.start()
    worker = (
        build_worker(settings, sessions, SystemClock())
        if mqtt is not None
        else Worker(build_relay(settings, sessions, SystemClock()), idle_seconds=0.02)
    )
    worker.start()
    try:
        yield World(
            platform=urls["platform"],
            factory=urls["factory"],
            payments=urls["payments"],
            registry=urls["registry"],
            smtp=smtp,
            sessions=sessions,
        )
    finally:
        worker.stop()
        for server in servers:
            server.stop()
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, never a browser downloaded by a test tool; one per module (Playwright's
    synchronous API allows one at a time, and other modules start their own)."""
    chromium = chromium_or_skip()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def axe() -> str:
    """axe-core's script from the npm registry (installed once into a cache outside git)."""
    return axe_source()
