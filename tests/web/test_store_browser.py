"""The store on a phone, in a real browser: the customer opens their car's store 360 px wide,
buys a free trial and a one-day window, pays with the test card (tokenised at the payment
sandbox by the page), and watches the purchase become active as the simulated car, connected to
a real MQTT broker, applies the new configuration; then reads their options with their end
dates, and the car's own screen shows them.

Every piece runs for real: the platform and its worker (relay and MQTT bridge) on a scratch
PostgreSQL, the payment sandbox, the broker, the car's agent and screen. Screenshots of each
page land in the test's tmp_path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import httpx
import pytest
from babel.dates import format_date
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Browser, ConsoleMessage, Page, ViewportSize, expect, sync_playwright

from caas.app import create_app
from caas.core.clock import SystemClock
from caas.core.db import make_engine, make_session_factory, unit_of_work
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.iot.service import find_credential
from caas.ota.keys import SigningMaterial
from caas.seed import DEMO_PASSWORD
from caas.worker import build_worker
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from caas_sim.vehicle.screen import create_app as screen_app
from tests.billing.conftest import API_KEY, WEBHOOK_SECRET, PaymentSandbox, payment_sandbox
from tests.conftest import ScratchDatabases, SmtpInbox
from tests.mqtt import V311, mqtt_broker
from tests.servers import serving, wait_until
from tests.store.conftest import owner_of
from tests.vehicles.support import Car, born_car, deliver, signing

__all__ = ["mqtt_broker", "payment_sandbox", "signing"]

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PHONE: ViewportSize = {"width": 360, "height": 780}
WAIT_MS = 20_000
TEST_CARD = ("4242 4242 4242 4242", "12/30", "123")
MADRID = ZoneInfo("Europe/Madrid")


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, never a browser downloaded by a test tool."""
    if not CHROMIUM.exists():
        pytest.skip(f"the browser tests need Debian's Chromium at {CHROMIUM} (`make browser`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def _fits_the_screen(page: Page) -> None:
    """Nothing sticks out sideways: the page reads on the phone without scrolling across."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width} px wide"


def _day(moment: datetime) -> str:
    """A day as the Spanish pages write it."""
    return format_date(moment.astimezone(MADRID), "medium", locale="es")


def test_a_customer_buys_a_trial_and_a_day_on_a_phone_and_watches_them_become_active(
    browser: Browser,
    scratch_databases: ScratchDatabases,
    smtp: SmtpInbox,
    mqtt_broker: LocalBroker,
    payment_sandbox: PaymentSandbox,
    signing: SigningMaterial,
    tmp_path: Path,
) -> None:
    url = scratch_databases.create()
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    settings = Settings(
        env="test",
        database_url=url,
        mqtt_url=mqtt_broker.service_url,
        mqtt_admin_username=mqtt_broker.admin_username,
        mqtt_admin_password=mqtt_broker.admin_password,
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        payment_url=payment_sandbox.url,
        # The browser tokenises the card at the sandbox itself, on this machine.
        payment_public_url=payment_sandbox.url,
        payment_api_key=API_KEY,
        payment_webhook_secret=WEBHOOK_SECRET,
        ota_keys_dir=tmp_path / "keys",
    )
    now = datetime.now(UTC)
    with unit_of_work(sessions) as session:
        car: Car = born_car(session, settings=settings, now=now)
        deliver(session, car, now=now)
    with sessions() as session:
        owner_of(session, car, now)

    worker = build_worker(settings, sessions, SystemClock())
    worker.start()
    complaints: list[str] = []

    def listen(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            complaints.append(f"{message.type}: {message.text}")

    try:
        assert worker.bridge is not None and worker.bridge.connected.wait(10)

        def credentials_delivered() -> bool:
            with sessions() as session:
                credential = find_credential(session, car.vin)
                return credential is not None and credential.pending_secret is None

        wait_until(credentials_delivered, timeout=15)
        agent = VehicleAgent(
            CarIdentity(
                car.vin, car.password, Ed25519PrivateKey.generate(), signing.root_public_key
            ),
            BrokerEndpoint(mqtt_broker.host, mqtt_broker.port, V311),
            software_version="7.2.0",
        )
        platform_app = create_app(settings=settings, sessions=sessions, clock=SystemClock())
        with (
            serving(screen_app(agent, run_fleet=True)) as screen,
            serving(platform_app) as platform,
        ):
            wait_until(lambda: agent.online and agent.version >= 2, timeout=15)

            context = browser.new_context(viewport=PHONE, base_url=platform.url, locale="es-ES")
            context.set_default_timeout(WAIT_MS)
            page = context.new_page()
            page.on("console", listen)
            page.goto("/login")
            page.fill("input[name=email]", car.customer_email)
            page.fill("input[name=password]", DEMO_PASSWORD)
            page.click("button[type=submit]")
            expect(page.locator("header .who")).to_be_visible()

            # The menu's store is the car's store (one car).
            page.click("nav a[href='/portal/store']")
            expect(page).to_have_url(re.compile(rf"/portal/cars/{car.vin}/store$"))
            _fits_the_screen(page)
            screens = page.locator("[data-option=entertainment] [data-refusal]")
            expect(screens).to_contain_text("hardware")
            page.screenshot(path=tmp_path / "store.png", full_page=True)

            boost = page.locator("[data-option=power_boost]")
            day = boost.locator("label[data-offer-kind=window][data-offer-duration='1D']")
            expect(day).to_contain_text("10,89")
            day.click()
            # Only the fields the chosen offer takes: a planned start, no last day, no cap.
            expect(boost.locator("[data-for='custom']")).to_be_hidden()
            expect(boost.locator("input[name='start.power_boost']")).to_be_visible()
            page.locator("[data-option=winter_traction] label[data-offer-kind=trial]").click()
            expect(page.locator("[data-cart-count]")).to_contain_text("2")
            page.click("#cart-form button[type=submit]")

            expect(page.locator("[data-total]")).to_contain_text("10,89")
            expect(page.locator("[data-quote-line]")).to_have_count(2)
            _fits_the_screen(page)
            page.screenshot(path=tmp_path / "checkout.png", full_page=True)
            number, expiry, cvc = TEST_CARD
            page.fill("#card-number", number)
            page.fill("#card-expiry", expiry)
            page.fill("#card-cvc", cvc)
            with page.expect_request(re.compile(r"/store/purchase$")) as buying:
                page.click("#pay-form button[type=submit]")
            body = buying.value.post_data or ""
            assert set(parse_qs(body)) == {"csrf_token", "idempotency_key", "cart", "card_token"}
            assert number.replace(" ", "") not in body

            expect(page).to_have_url(re.compile(rf"/portal/cars/{car.vin}/purchases/\d+$"))
            page.evaluate("window.stillTheSamePage = true")
            status = page.locator("[data-status-text]")
            expect(status).to_contain_text("Activa en tu coche", timeout=WAIT_MS)
            expect(page.locator("[data-step=active]")).to_have_class("done")
            expect(page.locator("[data-line=power_boost] [data-line-state]")).to_have_text("activa")
            # Followed live, without a reload.
            assert page.evaluate("window.stillTheSamePage") is True
            _fits_the_screen(page)
            page.screenshot(path=tmp_path / "purchase.png", full_page=True)

            page.click("a[href$='/store#options']")
            today = datetime.now(UTC)
            window = page.locator("[data-owned-option=power_boost][data-source=purchase]")
            expect(window).to_contain_text(f"hasta el {_day(today + timedelta(days=1))}")
            trial = page.locator("[data-owned-option=winter_traction][data-source=trial]")
            expect(trial).to_contain_text("prueba gratuita")
            expect(trial).to_contain_text("hasta el")
            page.locator("#options").screenshot(path=tmp_path / "options.png")
            _fits_the_screen(page)

            # Planning ahead fits the phone too, with its card form.
            page.click("#options a[href$='/plan']")
            expect(page.locator("#pay-form select[name=offer_id]")).to_contain_text("al día")
            _fits_the_screen(page)
            page.screenshot(path=tmp_path / "plan.png", full_page=True)

            # The car's own screen shows what it runs, with the window's end (a simulator's
            # page: its console, such as its missing icon, is not the platform's business).
            page.remove_listener("console", listen)
            page.goto(f"{screen.url}/cars/{car.vin}")
            expect(page.locator("body")).to_contain_text("Power boost active until")
            page.screenshot(path=tmp_path / "car-screen.png", full_page=True)
            context.close()

            # The car's own screen shows what it runs.
            shown = httpx.get(f"{screen.url}/api/cars/{car.vin}").json()
            running = {feature["code"]: feature for feature in shown["features"] if feature["on"]}
            assert {"power_boost", "winter_traction"} <= set(running)
            assert running["power_boost"]["valid_until"] is not None
            assert agent.active_features == ["driver_assist", "power_boost", "winter_traction"]
    finally:
        worker.stop()
        engine.dispose()
    assert not complaints, complaints
