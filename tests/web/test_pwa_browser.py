"""The customer app on a phone, in a real browser (Debian's Chromium, 360 x 740): every page of
the app reads without scrolling sideways, the service worker takes charge of the portal, and
with the network gone the car's page still shows its last known state under an "offline, last
updated" banner in the reader's language; logging out forgets the kept pages. Screenshots land
in the test's tmp_path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from caas.app import create_app
from caas.core.clock import SystemClock
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.seed import DEMO_PASSWORD
from tests.billing.conftest import payment_sandbox, settings
from tests.servers import serving
from tests.store.conftest import owner_of
from tests.store.engine import engine_keys, signing
from tests.vehicles.support import CommittedDatabase, born_car, committed, deliver

__all__ = ["committed", "engine_keys", "payment_sandbox", "settings", "signing"]

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PHONE: ViewportSize = {"width": 360, "height": 740}
WAIT_MS = 20_000


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


def test_the_app_fits_a_phone_and_shows_the_car_offline(
    browser: Browser,
    committed: CommittedDatabase,
    settings: Settings,
    signing: SigningMaterial,
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    car = committed.run(lambda session: born_car(session, settings=settings, now=now))
    committed.run(lambda session: deliver(session, car, now=now))
    committed.run(lambda session: owner_of(session, car, now))
    app = create_app(settings=settings, sessions=committed.sessions, clock=SystemClock())

    with serving(app) as server:
        context = browser.new_context(viewport=PHONE, base_url=server.url, locale="en-GB")
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        page.goto("/login")
        page.fill("input[name=email]", car.customer_email)
        page.fill("input[name=password]", DEMO_PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("header .who")).to_be_visible()

        pages = (
            "/portal/orders",
            f"/portal/orders/{car.sale_id}",
            "/portal/cars",
            f"/portal/cars/{car.vin}",
            f"/portal/cars/{car.vin}/store",
            f"/portal/cars/{car.vin}/sell",
            "/portal/receive",
            "/portal/file",
            "/portal/payment-methods",
            "/portal/notifications",
            "/portal/key",
            "/portal/privacy",
            "/portal/offline",
        )
        for path in pages:
            answer = page.goto(path)
            assert answer is not None and answer.status == 200, path
            _fits_the_screen(page)
            name = path.strip("/").replace("/", "_")
            page.screenshot(path=tmp_path / f"{name}.png", full_page=True)

        # The worker has taken charge of the portal and kept the car's page.
        page.goto("/portal/cars")
        page.wait_for_function("navigator.serviceWorker && navigator.serviceWorker.controller")
        page.goto(f"/portal/cars/{car.vin}")
        page.wait_for_function(
            f"caches.open('caas-pages').then(c => c.match('/portal/cars/{car.vin}'))"
            ".then(found => Boolean(found))"
        )

        context.set_offline(True)
        page.goto(f"/portal/cars/{car.vin}")
        banner = page.locator("[data-offline-banner-shown]")
        expect(banner).to_contain_text(
            "Sin conexión: última actualización"
        )  # the owner reads Spanish
        expect(page.locator("h1")).to_contain_text(car.vin)
        _fits_the_screen(page)
        page.screenshot(path=tmp_path / "car_offline.png", full_page=True)
        # A page never opened shows the offline page from the shell.
        page.goto("/portal/file?never-opened=1")
        expect(page.locator("[data-offline-page]")).to_be_visible()
        expect(page.locator("[data-offline-cars] a")).to_have_text([car.vin])

        context.set_offline(False)
        page.goto("/portal/orders")
        page.click("form[action='/logout'] button")
        expect(page).to_have_url(re.compile(r"/(login)?$"))
        page.wait_for_function("caches.has('caas-pages').then(kept => !kept)")
        context.close()
