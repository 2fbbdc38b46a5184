"""Every page renders for its role with its heading; texts exist in both languages; markup is
escaped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.web.pages import TEMPLATE_DIR
from caas.web.strings import TEXTS, translate
from tests.files.customers import sold_customer
from tests.web.support import log_in


def test_each_roles_pages_render_with_their_headings(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    sold = sold_customer(db, settings=settings, now=clock.now(), language="en")
    db.commit()
    pages = {
        "sales.madrid@caas.example": {
            "/intranet/sales": "<h1>Sales</h1>",
            "/intranet/sales/new": "<h1>New sale</h1>",
            f"/intranet/sales/{sold.sale.id}": f"<h1>Order {sold.sale.number}</h1>",
        },
        sold.email: {
            "/portal/orders": "<h1>My orders</h1>",
            f"/portal/orders/{sold.sale.id}": "Your order&#39;s progress",
            "/portal/file": "<h1>My file</h1>",
            "/portal/notifications": "<h1>Notifications",
        },
        "operator@caas.example": {
            "/operator/orders": "<h1>All orders</h1>",
            f"/operator/orders/{sold.sale.id}": f"<h1>Order {sold.sale.number}</h1>",
            "/operator/catalog": "<h1>Catalog</h1>",
            f"/operator/customers/{sold.customer.id}": "<h1>Customer file:",
        },
        "workshop@caas.example": {"/workshop": "<h1>Find a car</h1>"},
    }
    for email, expected in pages.items():
        log_in(app_client, email)
        for path, heading in expected.items():
            response = app_client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert heading in response.text, path
            assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in (
                response.text
            )


def test_what_people_typed_is_escaped_on_every_page(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    sold = sold_customer(
        db, settings=settings, now=clock.now(), first_name="<script>alert(1)</script>"
    )
    db.commit()
    log_in(app_client, "sales.madrid@caas.example")
    for path in ("/intranet/sales", f"/intranet/sales/{sold.sale.id}"):
        page = app_client.get(path).text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def _keys_used_in_templates() -> set[str]:
    keys: set[str] = set()
    for template in Path(TEMPLATE_DIR).rglob("*.html"):
        keys.update(
            re.findall(r"""\bt\(\s*["']([a-z_]+\.[a-z0-9_.]+)["']\s*[,)]""", template.read_text())
        )
    return keys


def test_every_text_a_template_names_is_written_in_english() -> None:
    missing = sorted(key for key in _keys_used_in_templates() if key not in TEXTS["en"])
    assert missing == []


def test_every_text_is_written_in_spanish_too_with_the_same_placeholders() -> None:
    assert sorted(set(TEXTS["en"]) ^ set(TEXTS["es"])) == []
    placeholder = re.compile(r"\{(\w+)\}")
    for key, text in TEXTS["es"].items():
        assert set(placeholder.findall(text)) == set(placeholder.findall(TEXTS["en"][key])), key


@pytest.mark.parametrize("language", ["en", "es"])
def test_an_unwritten_key_falls_back_to_english_then_to_the_key(language: str) -> None:
    assert translate(language, "nav.sales") in ("Sales", "Ventas")
    assert translate(language, "no.such.key") == "no.such.key"


def test_pages_send_scripts_only_from_this_site_and_cards_only_to_the_provider(
    app_client: TestClient, settings: Settings
) -> None:
    headers = app_client.get("/login").headers
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert f"connect-src 'self' {settings.browser_payment_url.rstrip('/')}" in policy
    assert headers["referrer-policy"] == "no-referrer"  # the activation token stays here
