"""The demo's journey in a real browser, each role on its own pages, as a person clicks it.

Debian's Chromium, driven by Playwright, walks the same running world as the HTTP journey: the
dealer sells through the intranet form, the customer activates from the e-mail and pays by card
in the portal on a phone-sized screen (the card goes from the page to the payment sandbox, only
its token to the platform), the factory reports its stages, the dealer delivers, and the
customer's file, the operator's console and the workshop show the car. Every wait is for
something the page shows, with a deadline; a screenshot per role lands in tests/e2e/screenshots/
and axe-core checks each of those pages. Over a real MQTT broker the car, as the factory flashed
it, connects; the customer buys a day of winter traction on a 360x740 phone and sees it on the
car's screen; the workshop records a service; offline, the car's page shows its last state.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    ViewportSize,
    expect,
)

from caas.sales.rules import FACTORY_STAGES
from caas.seed import DEMO_PASSWORD
from caas_sim.vehicle.agent import VehicleAgent
from caas_sim.vehicle.fleet import car_from_factory
from caas_sim.vehicle.screen import create_app as screen_app
from tests.e2e.browser import SCREENSHOTS, axe_violations
from tests.e2e.conftest import World
from tests.factories import sale_payload
from tests.servers import serving, wait_until

pytestmark = pytest.mark.e2e

DESKTOP: ViewportSize = {"width": 1280, "height": 900}
WIDE: ViewportSize = {"width": 1440, "height": 900}
PHONE: ViewportSize = {"width": 360, "height": 740}
# Long enough for the order page's live status, which asks every four seconds.
WAIT_MS = 15_000

CUSTOMER_PASSWORD = "my-own-long-password"
TEST_CARD = ("4242 4242 4242 4242", "12/30", "123")
SPANISH_PLATE = re.compile(r"^\d{4} [BCDFGHJKLMNPRSTVWXYZ]{3}$")


@dataclass
class Visitors:
    """Opens a browser window per role and remembers what the pages complained about."""

    browser: Browser
    world: World
    axe: str
    complaints: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)

    def window(self, viewport: ViewportSize) -> Page:
        context = self.browser.new_context(viewport=viewport, base_url=self.world.platform)
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        page.on("console", self._listen)
        return page

    def logged_in(self, email: str, password: str, viewport: ViewportSize = DESKTOP) -> Page:
        page = self.window(viewport)
        page.goto("/login")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        expect(page.locator("header .who")).to_be_visible()
        return page

    def shoot(self, page: Page, role: str) -> None:
        """The page's screenshot under tests/e2e/screenshots/; axe finds nothing serious."""
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"journey-{role}.png", full_page=True)
        violations = axe_violations(page, self.axe)
        assert not violations, f"axe on {page.url}: {violations}"
        self.pages.append(page.content())

    def _listen(self, message: ConsoleMessage) -> None:
        # Chromium logs a page's missing autocomplete hints, failed loads (a favicon's 404) and
        # script errors here; the car's screen is the simulator's page, not the platform's.
        if not message.location["url"].startswith(self.world.platform):
            return
        if message.type in ("error", "warning") or message.text.startswith("[DOM]"):
            self.complaints.append(f"{message.type}: {message.text} ({message.location['url']})")


@pytest.fixture
def visitors(browser: Browser, connected_world: World, axe: str) -> Visitors:
    return Visitors(browser, connected_world, axe)


def _expect_state(page: Page, state: str) -> None:
    """Wait until the order's badge says `state` (reloads and live updates included)."""
    expect(page.locator(".page-head [data-state]")).to_have_attribute(
        "data-state", state, timeout=WAIT_MS
    )


def _pay_by_card(
    page: Page, action: re.Pattern[str] = re.compile(r"/portal/orders/\d+/pay$")
) -> None:
    """Type the test card and pay; the platform receives the provider's token, not the card."""
    number, expiry, cvc = TEST_CARD
    page.fill("#card-number", number)
    page.fill("#card-expiry", expiry)
    page.fill("#card-cvc", cvc)
    with page.expect_request(action) as paying:
        page.click("#pay-form button[type=submit]")
    body = paying.value.post_data or ""
    posted = parse_qs(body)
    assert {"csrf_token", "idempotency_key", "card_token"} <= set(posted), posted
    assert posted["card_token"][0]
    assert number.replace(" ", "") not in body


def _fits_the_screen(page: Page) -> None:
    """Nothing sticks out sideways: the page reads on a phone without scrolling across."""
    viewport = page.viewport_size
    assert viewport is not None
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], f"{page.url} is {width} px wide"


def test_each_role_walks_the_journey_in_the_browser(
    connected_world: World, visitors: Visitors, caplog: pytest.LogCaptureFixture
) -> None:
    world = connected_world
    caplog.set_level(logging.INFO)
    payload = sale_payload("ES")
    customer_data = payload["customer"]
    email = customer_data["email"]

    # 1. The dealer fills the sale form; the quote beside it is priced live, then the sale closes.
    dealer = visitors.logged_in("sales.madrid@caas.example", DEMO_PASSWORD)
    dealer.goto("/intranet/sales/new")
    dealer.select_option("select[name='customer.country']", "ES")
    for name in ("first_name", "last_name", "national_id", "email", "phone", "street"):
        dealer.fill(f"input[name='customer.{name}']", customer_data[name])
    dealer.fill("input[name='customer.postal_code']", customer_data["postal_code"])
    dealer.fill("input[name='customer.city']", customer_data["city"])
    dealer.select_option("select[name='plan.platform']", "AURA")
    dealer.check("input[name='plan.features.AURA'][value='driver_assist']")
    dealer.fill("input[name='plan.service_period_months']", "48")
    dealer.check("input[name='plan.maintenance_included']")
    plan = payload["plan"]
    # Priced in the page's language, like the figures on the rest of the page.
    quote = dealer.request.post(
        "/api/v1/quotes",
        data={"country": "ES", "plan": plan},
        headers={"Accept-Language": "en"},
    ).json()
    expect(dealer.locator("#quote .total-row .num")).to_have_text(quote["total"]["formatted"])
    visitors.shoot(dealer, "dealer-quote")
    dealer.get_by_role("button", name="Close the sale").click()
    dealer.wait_for_url(re.compile(r"/intranet/sales/\d+$"))
    sale_id = int(dealer.url.rsplit("/", 1)[1])
    _expect_state(dealer, "awaiting_deposit")

    # 2. The customer opens the activation link from the real e-mail and chooses a password.
    wait_until(lambda: bool(world.smtp.to(email)), timeout=10)
    link = re.search(
        r"https?://\S+/activate\?token=[\w-]+", world.smtp.text_of(world.smtp.to(email)[0])
    )
    assert link is not None
    customer = visitors.window(PHONE)
    customer.goto(link.group(0))
    customer.fill("input[name=password]", CUSTOMER_PASSWORD)
    customer.fill("input[name=password_again]", CUSTOMER_PASSWORD)
    customer.click("button[type=submit]")
    customer.wait_for_url("**/portal/orders")
    customer.click(f"a[data-order='{sale_id}']")
    _expect_state(customer, "awaiting_deposit")
    _fits_the_screen(customer)

    # 3. The deposit, by card: the page tokenises it at the sandbox; the order goes to the
    #    factory by itself and the page, which keeps asking for its status, shows it.
    _pay_by_card(customer)
    _expect_state(customer, "ordered")
    (factory_order,) = httpx.get(f"{world.factory}/sim/orders").json()

    # 4. The factory reports every stage; the customer's page follows to "at the dealer".
    for _stage in FACTORY_STAGES:
        advanced = httpx.post(f"{world.factory}/sim/orders/{factory_order['order_id']}/advance")
        assert advanced.status_code == 200 and advanced.json()["delivered"], advanced.text
    _expect_state(customer, FACTORY_STAGES[-1])

    # 5. The rest is paid the same way; the worker registers the car with the Spanish registry.
    _pay_by_card(customer)
    _expect_state(customer, "registered")
    plate = customer.locator("[data-plate]").inner_text()
    assert SPANISH_PLATE.match(plate), plate

    # 6. The dealer books the transport (tomorrow is already filled in), dispatches, hands over.
    dealer.reload()
    expect(dealer.locator("[data-plate]")).to_have_text(plate)
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    expect(dealer.locator("input[name=scheduled_for]")).to_have_value(tomorrow)
    dealer.fill("input[name=carrier]", "TransAuto Iberia")
    for button, state in (
        ("Schedule the transport", "delivery_scheduled"),
        ("The car has left (in transit)", "in_transit"),
        ("Handed over to the customer", "delivered"),
    ):
        dealer.get_by_role("button", name=button).click()
        _expect_state(dealer, state)
    visitors.shoot(dealer, "dealer")

    # The customer's file: the car with its plate, and an invoice for each payment.
    customer.goto("/portal/file")
    expect(customer.locator("#purchase .plate")).to_have_text(plate)
    expect(customer.locator("#invoices tbody tr")).to_have_count(2)
    _fits_the_screen(customer)
    visitors.shoot(customer, "customer")

    # The operator lands on all the orders and sees this one delivered.
    operator = visitors.logged_in("operator@caas.example", DEMO_PASSWORD, WIDE)
    operator.wait_for_url("**/operator/orders")
    row = operator.locator("tbody tr", has_text=factory_order["order_id"])
    expect(row.locator("[data-state]")).to_have_attribute("data-state", "delivered")
    visitors.shoot(operator, "operator")

    # The workshop finds the car by its plate, typed as a person types it.
    workshop = visitors.logged_in("workshop@caas.example", DEMO_PASSWORD)
    workshop.fill("input[name=q]", plate.replace(" ", "").lower())
    workshop.get_by_role("button", name="Find").click()
    workshop.wait_for_url(re.compile(r"/workshop/cars/\w{17}$"))
    expect(workshop.locator(".page-head .plate")).to_have_text(plate)
    visitors.shoot(workshop, "workshop")

    # The workshop records a service; the car's page lists it.
    vin = workshop.url.rsplit("/", 1)[1]
    expect(workshop.locator("#f-performed_at")).not_to_be_empty()  # now, by default
    workshop.fill("#f-odometer_km", "1200")
    workshop.fill("#f-work_description", "First inspection, all good")
    workshop.get_by_role("button", name="Record the service").click()
    expect(workshop.locator(".alert-ok")).to_contain_text("Service recorded.")
    expect(workshop.locator("main")).to_contain_text("First inspection, all good")
    visitors.shoot(workshop, "workshop-service")

    favicon = workshop.request.get("/favicon.ico")
    assert favicon.ok and favicon.headers["content-type"] == "image/svg+xml"

    # 7. The car, as the factory built and flashed it, connects to the broker and receives its
    #    configuration; its screen (the vehicle simulator's page) runs beside it.
    flashed = car_from_factory(world.factory, vin)
    assert flashed is not None
    agent = VehicleAgent(flashed.identity, flashed.broker)
    with serving(screen_app(agent, run_fleet=True)) as screen:
        wait_until(lambda: agent.online and "driver_assist" in agent.active_features, timeout=20)

        # 8. On the phone, the customer buys a day of winter traction in the car's store, pays by
        #    card, and watches the purchase become active on the car, live.
        customer.click("nav a[href='/portal/store']")
        expect(customer).to_have_url(re.compile(rf"/portal/cars/{vin}/store$"))
        _fits_the_screen(customer)
        visitors.shoot(customer, "customer-store")
        traction = customer.locator("[data-option=winter_traction]")
        traction.locator("label[data-offer-kind=window][data-offer-duration='1D']").click()
        customer.click("#cart-form button[type=submit]")
        expect(customer.locator("[data-quote-line]")).to_have_count(1)
        _fits_the_screen(customer)
        visitors.shoot(customer, "customer-checkout")
        _pay_by_card(customer, re.compile(r"/store/purchase$"))
        expect(customer).to_have_url(re.compile(rf"/portal/cars/{vin}/purchases/\d+$"))
        expect(customer.locator("[data-status-text]")).to_contain_text(
            "Activa en tu coche",
            timeout=WAIT_MS,  # the customer reads Spanish
        )
        _fits_the_screen(customer)
        visitors.shoot(customer, "customer-purchase")

        # 9. The car's own screen shows the option with its end.
        customer.goto(f"{screen.url}/cars/{vin}")
        expect(customer.locator("body")).to_contain_text("Winter traction active until")
        customer.screenshot(path=SCREENSHOTS / "journey-car-screen.png", full_page=True)
        assert "winter_traction" in agent.active_features

    assert visitors.complaints == []

    # No password, card number, activation token or session cookie in a log line, and no
    # password or card number in a page.
    cookies = [cookie["value"] for page in (customer, dealer) for cookie in page.context.cookies()]
    token = link.group(0).rsplit("=", 1)[1]
    card = TEST_CARD[0].replace(" ", "")
    for secret in (CUSTOMER_PASSWORD, DEMO_PASSWORD, card, TEST_CARD[0], token, *cookies):
        assert secret not in caplog.text, "a secret in the logs"
    # (The card form's placeholder shows the sandbox's test number, spaced, as a hint.)
    for secret in (CUSTOMER_PASSWORD, DEMO_PASSWORD, card):
        assert not any(secret in html for html in visitors.pages), "a secret in a page"

    # 10. The app's shell offline: the car's page, seen once online, still shows the car's last
    #     known state without a network, with a banner saying so.
    customer.goto(f"/portal/cars/{vin}")
    if customer.evaluate("() => !document.querySelector('script[src$=\"/static/pwa.js\"]')"):
        pytest.xfail("the customer app's service worker (issue 7 part 1) is not in this tree yet")
    customer.evaluate("() => navigator.serviceWorker.ready.then(() => true)")
    customer.reload()  # now under the worker, which keeps this copy
    expect(customer.locator("main")).to_contain_text(vin)
    customer.context.set_offline(True)
    customer.reload()
    expect(customer.locator("[data-offline-banner-shown]")).to_be_visible()
    expect(customer.locator("main")).to_contain_text(vin)
    expect(customer.locator("main")).to_contain_text(plate)
    visitors.shoot(customer, "customer-car-offline")
    customer.context.set_offline(False)
