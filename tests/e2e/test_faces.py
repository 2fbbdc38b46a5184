"""Each role's pages in a real browser, as a person opens and clicks them; axe-core checks every
page for serious accessibility problems and a screenshot of each lands in tests/e2e/screenshots/.

One running world serves the whole module (the platform, its worker, the simulators, a real SMTP
server); the dealer's sale made here is the customer's order the portal pages show."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from caas.core.db import unit_of_work
from caas.core.history import Actor
from caas.ota.models import ConfigurationVersion
from caas.ota.pushes import open_push
from caas.seed import DEMO_PASSWORD
from tests.e2e.browser import DESKTOP, PHONE, WIDE, Faces
from tests.e2e.conftest import World
from tests.factories import sale_payload
from tests.servers import wait_until

pytestmark = pytest.mark.e2e

DEALER = "sales.madrid@caas.example"
OPERATOR = "operator@caas.example"
WORKSHOP = "workshop@caas.example"
CUSTOMER_PASSWORD = "a-customers-long-password"


@pytest.fixture(scope="module")
def faces(browser: Browser, shared_world: World, axe: str) -> Iterator[Faces]:
    seen = Faces(browser, shared_world.platform, axe, prefix="faces")
    yield seen
    assert seen.complaints == [], seen.complaints


@pytest.fixture(scope="module")
def sold(shared_world: World) -> dict[str, str]:
    """A sale closed by the Madrid dealer through the API; its customer's activation link."""
    payload = sale_payload("ES")
    with httpx.Client(base_url=shared_world.platform) as api:
        token = api.post(
            "/api/v1/auth/tokens", json={"email": DEALER, "password": DEMO_PASSWORD}
        ).json()["token"]
        made = api.post(
            "/api/v1/sales",
            json=payload,
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "faces-sale-1"},
        )
        assert made.status_code == 201, made.text
    email = payload["customer"]["email"]
    smtp = shared_world.smtp
    wait_until(lambda: bool(smtp.to(email)), timeout=10)
    link = re.search(r"https?://\S+/activate\?token=[\w-]+", smtp.text_of(smtp.to(email)[0]))
    assert link is not None
    return {"email": email, "sale": str(made.json()["id"]), "link": link.group(0)}


def _fits_the_screen(page: Page) -> None:
    viewport = page.viewport_size
    assert viewport is not None
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], f"{page.url} is {width} px wide"


def test_the_dealers_pages(faces: Faces, sold: dict[str, str]) -> None:
    page = faces.logged_in(DEALER, DEMO_PASSWORD, DESKTOP)
    faces.check(page, "dealer-sales")

    # The list's search and state filter.
    page.fill("input[name=search]", sold["email"])
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    faces.check(page, "dealer-sales-search")
    page.goto("/intranet/sales")
    page.select_option("select[name=state]", "delivered")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"state=delivered"))
    expect(page.locator(f"tbody tr a[href='/intranet/sales/{sold['sale']}']")).to_have_count(0)

    # The new sale: the quote follows the form; what is wrong is said next to its field.
    faces.visit(page, "/intranet/sales/new", "dealer-new-sale")
    customer = sale_payload("ES")["customer"]
    page.select_option("select[name='customer.country']", "ES")
    for name in ("first_name", "last_name", "email", "phone", "street", "postal_code", "city"):
        page.fill(f"input[name='customer.{name}']", customer[name])
    page.fill("input[name='customer.national_id']", "12345678A")  # the wrong control letter
    page.select_option("select[name='plan.platform']", "AURA")
    page.check("input[name='plan.features.AURA'][value='driver_assist']")
    page.fill("input[name='plan.service_period_months']", "36")
    expect(page.locator("#quote .total-row .num")).not_to_be_empty()
    page.get_by_role("button", name="Close the sale").click()
    error = page.locator("[id='customer.national_id-error']")
    expect(error).to_be_visible()
    field = page.locator("input[name='customer.national_id']")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_value("12345678A")  # what was typed stays
    faces.check(page, "dealer-new-sale-errors")

    faces.visit(page, "/intranet/resales/new", "dealer-resale")

    # The order's tracking page, from the list.
    faces.visit(page, f"/intranet/sales/{sold['sale']}", "dealer-order")
    expect(page.locator(".page-head [data-state]")).to_have_attribute(
        "data-state", "awaiting_deposit"
    )
    page.context.close()


def test_the_workshops_pages(faces: Faces) -> None:
    page = faces.logged_in(WORKSHOP, DEMO_PASSWORD, DESKTOP)
    faces.check(page, "workshop-search")
    page.fill("input[name=q]", "0000XYZ")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("main")).to_contain_text("No car with this VIN or plate.")
    faces.check(page, "workshop-not-found")
    faces.visit(page, "/workshop/upkeep", "workshop-calendar")
    page.context.close()


def _a_push(world: World) -> int:
    """A configuration push over the newest manifests of the world's cars, as a release's
    wave would have made it, for the pushes pages."""
    with unit_of_work(world.sessions) as session:
        push = open_push(
            session,
            kind="release.wave",
            label="software 9.9.9, rollout 1, wave 1",
            actor=Actor.system("e2e"),
            now=datetime.now(UTC),
        )
        newest = session.scalars(
            select(ConfigurationVersion).order_by(ConfigurationVersion.id.desc()).limit(3)
        )
        for version in newest:
            version.push_id = push.id
        return push.id


def test_the_operators_pages(faces: Faces, sold: dict[str, str], shared_world: World) -> None:
    push_id = _a_push(shared_world)
    page = faces.logged_in(OPERATOR, DEMO_PASSWORD, WIDE)
    faces.check(page, "operator-orders")
    faces.visit(page, "/operator/catalog", "operator-catalog")
    page.click("a[href='/operator/catalog/AURA']")
    faces.check(page, "operator-platform")
    page.locator("a[href^='/operator/offers/']").first.click()
    expect(page).to_have_url(re.compile(r"/operator/offers/\d+$"))
    faces.check(page, "operator-offer")

    faces.visit(page, "/operator/fleet", "operator-fleet")
    page.select_option("select[name=online]", "no")
    page.select_option("select[name=pending]", "yes")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"online=no"))
    faces.check(page, "operator-fleet-filtered")

    faces.visit(page, "/operator/pushes", "operator-pushes")
    page.click(f"a[href='/operator/pushes/{push_id}']")
    expect(page.locator("[data-count=targeted]")).to_be_visible()
    faces.check(page, "operator-push")
    page.select_option("select[name=outcome]", "applied")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"outcome=applied"))
    faces.check(page, "operator-push-filtered")

    faces.visit(page, "/operator/finance", "operator-finance")
    faces.visit(page, "/operator/releases", "operator-releases")
    faces.visit(page, "/operator/releases/new", "operator-release-new")

    # The audit trail, searched by the customer's e-mail: the sale made above is there.
    faces.visit(page, "/operator/audit", "operator-audit")
    page.fill("input[name=customer]", sold["email"])
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#audit tbody tr").first).to_be_visible()
    rows = page.locator("#audit tbody tr")
    assert rows.count() >= 1
    expect(page.locator("#audit")).not_to_contain_text("sales.lyon@caas.example")
    faces.check(page, "operator-audit-search")
    page.locator("#audit tbody tr a[href^='/operator/customers/']").first.click()
    expect(page).to_have_url(re.compile(r"/operator/customers/\d+$"))
    faces.check(page, "operator-customer-file")
    page.context.close()


def test_the_customers_pages_on_a_phone(faces: Faces, sold: dict[str, str]) -> None:
    page = faces.window(PHONE)
    page.goto(sold["link"])
    faces.check(page, "customer-activate")
    page.fill("input[name=password]", CUSTOMER_PASSWORD)
    page.fill("input[name=password_again]", CUSTOMER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/portal/orders")
    faces.check(page, "customer-orders")
    _fits_the_screen(page)
    for path, name in (
        (f"/portal/orders/{sold['sale']}", "customer-order"),
        ("/portal/cars", "customer-cars"),
        ("/portal/file", "customer-file"),
        ("/portal/payment-methods", "customer-payment-methods"),
        ("/portal/notifications", "customer-notifications"),
        ("/portal/privacy", "customer-privacy"),
        ("/portal/store", "customer-store"),
        ("/portal/upkeep", "customer-upkeep"),
        ("/portal/receive", "customer-receive"),
        ("/portal/offline", "customer-offline"),
    ):
        faces.visit(page, path, name)
        _fits_the_screen(page)
    page.context.close()


def test_the_language_switch(faces: Faces) -> None:
    page = faces.logged_in(DEALER, DEMO_PASSWORD, DESKTOP)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.locator("footer").get_by_role("button", name="Español").click()
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page).to_have_url(re.compile(r"/intranet/sales$"))  # the same page, now in Spanish
    expect(page.locator("nav.nav")).to_contain_text("Ventas")
    faces.check(page, "language-es")
    # The choice holds on the next page, and switching back works the same way.
    page.click("a[href='/intranet/sales/new']")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    page.locator("footer").get_by_role("button", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("nav.nav")).to_contain_text("Sales")
    page.context.close()


def test_the_keyboard_reaches_the_content_first(faces: Faces) -> None:
    """The first Tab lands on the skip link, which takes the focus to the page's content."""
    page = faces.logged_in(OPERATOR, DEMO_PASSWORD, WIDE)
    page.keyboard.press("Tab")
    skip = page.locator(".skip-link")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("main#content")).to_be_focused()
    # The menu's links are reached with Tab and opened with Enter.
    page.locator("nav.nav a[href='/operator/fleet']").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/operator/fleet$"))
    page.context.close()


def test_the_pages_without_a_session(faces: Faces) -> None:
    page = faces.window(PHONE)
    for path, name in (
        ("/login", "anonymous-login"),
        ("/activate/resend", "anonymous-resend"),
        ("/activate?token=not-a-token", "anonymous-activate"),
        ("/receive", "anonymous-receive"),
    ):
        faces.visit(page, path, name)
        _fits_the_screen(page)
    page.context.close()
