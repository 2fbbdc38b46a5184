"""The customer app installs as a web app: its manifest, icons and service worker are served
by the platform with the right types, the policy lets the worker run, the portal's pages
register it (staff pages do not), and the menu reaches every page of the app."""

from __future__ import annotations

import io
import re

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from tests.files.customers import sold_customer
from tests.web.support import log_in, submit


def test_the_manifest_describes_an_installable_app_in_the_readers_language(
    app_client: TestClient,
) -> None:
    response = app_client.get("/manifest.webmanifest")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/manifest+json"
    manifest = response.json()
    assert manifest["start_url"] == "/portal"
    assert manifest["scope"] == "/portal"
    assert manifest["display"] == "standalone"
    assert manifest["theme_color"] == "#0b5fff"
    assert manifest["short_name"] == "My car"
    sizes = {(icon["sizes"], icon.get("purpose", "any")) for icon in manifest["icons"]}
    assert sizes == {("192x192", "any"), ("512x512", "any"), ("512x512", "maskable")}
    for icon in manifest["icons"]:
        image = app_client.get(icon["src"])
        assert image.headers["content-type"] == "image/png"
        picture = Image.open(io.BytesIO(image.content))
        assert f"{picture.width}x{picture.height}" == icon["sizes"]

    submit(app_client, "/login", "/language", {"lang": "es", "next": "/login"})
    assert app_client.get("/manifest.webmanifest").json()["short_name"] == "Mi coche"


def test_the_service_worker_is_served_from_the_root_and_never_kept_by_http(
    app_client: TestClient,
) -> None:
    response = app_client.get("/sw.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-cache"
    worker = response.text
    # It keeps the shell, answers only GETs, and lets go of the pages at logout.
    assert '"/portal/offline"' in worker
    assert 'request.method !== "GET"' in worker
    assert 'message.type === "logout"' in worker
    # Everything it keeps exists.
    for path in re.findall(r'"(/static/[^"]+)"', worker):
        assert app_client.get(path).status_code == 200, path


def test_the_policy_lets_the_worker_and_the_manifest_load_from_this_site(
    app_client: TestClient,
) -> None:
    policy = app_client.get("/login").headers["content-security-policy"]
    assert "worker-src 'self'" in policy
    assert "manifest-src 'self'" in policy


def test_the_portal_registers_the_app_and_its_menu_reaches_every_page(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    sold = sold_customer(db, settings=settings, now=clock.now(), language="en")
    db.commit()
    log_in(app_client, sold.email)
    page = app_client.get("/portal/orders").text
    assert '<link rel="manifest" href="/manifest.webmanifest">' in page
    assert '<script src="/static/pwa.js" defer></script>' in page
    assert "data-app" in page
    assert 'data-offline-banner="Offline: last updated {when}"' in page
    nav = re.search(r'<nav class="nav".*?</nav>', page, re.S)
    assert nav is not None
    links = re.findall(r'href="([^"]+)"', nav.group(0))
    # Every page of the app is in the menu.
    assert set(links) >= {
        "/portal/orders",
        "/portal/cars",
        "/portal/store",
        "/portal/file",
        "/portal/payment-methods",
        "/portal/notifications",
        "/portal/key",
        "/portal/privacy",
    }
    for link in links:
        assert app_client.get(link).status_code == 200, link


def test_staff_pages_do_not_offer_the_customer_app(app_client: TestClient) -> None:
    log_in(app_client, "sales.madrid@caas.example")
    page = app_client.get("/intranet/sales").text
    assert 'rel="manifest"' not in page
    assert "data-app" not in page


def test_a_signed_out_page_tells_the_app_to_forget_the_kept_pages(
    app_client: TestClient,
) -> None:
    assert "<body data-signed-out>" in app_client.get("/login").text


def test_the_offline_page_leaves_a_waiting_message_for_the_next_page(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    sold = sold_customer(db, settings=settings, now=clock.now(), language="en")
    db.commit()
    log_in(app_client, sold.email)
    submit(app_client, "/portal/notifications", "/portal/notifications/read", {})
    offline = app_client.get("/portal/offline")
    assert offline.status_code == 200
    assert "<h1>Offline</h1>" in offline.text
    assert 'role="status"' not in offline.text.split("<main", 1)[1].split("</main>")[0]
    next_page = app_client.get("/portal/notifications").text
    assert 'class="alert alert-ok" role="status"' in next_page
