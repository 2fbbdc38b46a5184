"""The digital key in a real browser: the page makes the phone's key pair with WebCrypto, keeps
the private key in IndexedDB (not extractable), pairs it, and opens the simulated car by
signing the car's own challenge."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Browser, ConsoleMessage, expect, sync_playwright

from caas.app import create_app
from caas.core.clock import SystemClock
from caas.core.db import make_engine, make_session_factory
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.ota.service import manifest_payload, versions_of
from caas.seed import DEMO_PASSWORD
from caas.vehicles.models import Vehicle
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from caas_sim.vehicle.screen import create_app as screen_app
from tests.conftest import ScratchDatabases, SmtpInbox
from tests.registration.support import let_customer_log_in, order_in_state
from tests.servers import serving, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 10_000


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, never a browser downloaded by a test tool."""
    if not CHROMIUM.exists():
        pytest.skip(f"the browser tests need Debian's Chromium at {CHROMIUM} (`make browser`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


def test_this_phone_is_paired_and_opens_the_car(
    browser: Browser,
    scratch_databases: ScratchDatabases,
    smtp: SmtpInbox,
    signing_with: SigningMaterial,
) -> None:
    engine = make_engine(scratch_databases.create())
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    with sessions() as session:
        settings = Settings(env="test", smtp_url=f"smtp://127.0.0.1:{smtp.port}")
        order = order_in_state(session, settings=settings, now=now, state="delivered")
        session.get_one(Vehicle, order.vehicle_id).delivered_at = now
        let_customer_log_in(session, order, now)
    car = VehicleAgent(
        CarIdentity(
            order.vin, "unused", Ed25519PrivateKey.generate(), signing_with.root_public_key
        ),
        BrokerEndpoint("127.0.0.1"),
    )
    complaints: list[str] = []

    def listen(message: ConsoleMessage) -> None:
        # The car's refusal is a 403, which Chromium logs; anything else is a fault of the page.
        if message.type == "error" and "status of 403" not in message.text:
            complaints.append(message.text)

    with serving(screen_app(car)) as screen:
        settings = Settings(
            env="test", smtp_url=f"smtp://127.0.0.1:{smtp.port}", vehicle_sim_url=screen.url
        )
        platform_app = create_app(settings=settings, sessions=sessions, clock=SystemClock())
        with serving(platform_app) as platform:
            context = browser.new_context(base_url=platform.url)
            context.set_default_timeout(WAIT_MS)
            page = context.new_page()
            page.on("console", listen)
            page.goto("/login")
            page.fill("input[name=email]", order.customer_email)
            page.fill("input[name=password]", DEMO_PASSWORD)
            page.click("button[type=submit]")
            expect(page.locator("header .who")).to_be_visible()

            page.goto("/portal/key")
            page.fill("[data-pair-this-phone] input[name=label]", "Ana's phone")
            page.click("[data-pair-this-phone] button[type=submit]")
            expect(page.locator("[data-this-phone-status]")).to_contain_text("Ana's phone")
            expect(page.locator("[data-try-key]")).to_be_visible()
            stored = page.evaluate(
                """() => new Promise((resolve, reject) => {
                    const open = indexedDB.open("caas-phone-key", 1);
                    open.onerror = () => reject(open.error);
                    open.onsuccess = () => {
                        const keys = open.result.transaction("keys").objectStore("keys");
                        const get = keys.get("this-phone");
                        get.onsuccess = () => resolve({
                            extractable: get.result.privateKey.extractable,
                            type: get.result.privateKey.type,
                            publicKey: get.result.publicKey,
                        });
                    };
                })"""
            )
            assert (stored["extractable"], stored["type"]) == (False, "private")

            # The car has not had its new manifest yet: it refuses the phone.
            page.click("[data-operate=unlock]")
            expect(page.locator("[data-operate-result]")).to_contain_text("No phone is paired")
            assert car.locked

            with sessions() as session:
                newest = versions_of(session, order.vehicle_id)[0]
                assert [key.public_key for key in car.phone_keys] == []
                car.receive(manifest_payload(newest))
            assert [key.public_key for key in car.phone_keys] == [stored["publicKey"]]

            page.click("[data-operate=unlock]")
            # The customer reads Spanish: "the car is unlocked", then "started".
            expect(page.locator("[data-operate-result]")).to_contain_text("El coche está abierto")
            wait_until(lambda: not car.locked)
            page.click("[data-operate=start]")
            expect(page.locator("[data-operate-result]")).to_contain_text("El coche está arrancado")
            assert car.started
            context.close()
    engine.dispose()
    assert not complaints, complaints
