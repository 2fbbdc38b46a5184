"""The public catalog and the manuals over HTTP."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from pypdf import PdfReader

from tests.files.customers import login


def test_catalog_is_public_with_options_plan_and_prices_in_the_country(
    app_client: TestClient,
) -> None:
    response = app_client.get("/api/v1/platforms", params={"country": "ES"})
    assert response.status_code == 200
    platforms = {p["code"]: p for p in response.json()}
    assert set(platforms) == {"AURA", "BOREAL", "CIRRUS"}
    aura = platforms["AURA"]
    assert aura["maintenance_plan"] == {"every_km": 20000, "every_months": 12}
    (price,) = aura["prices"]
    assert price["country"] == "ES" and price["vat_rate_percent"] == "21.00"
    assert price["net"]["amount_minor"] == 2_900_000
    assert price["total"]["amount_minor"] == 2_900_000 + 609_000
    assert {o["code"] for o in aura["options"]} == {
        "power_boost",
        "driver_assist",
        "winter_traction",
        "entertainment",
    }
    assert all(len(option["plan_prices"]) == 1 for option in aura["options"])
    assert aura["manual_url"] == "/api/v1/platforms/AURA/manual.pdf"


def test_catalog_without_a_country_lists_every_countrys_price(app_client: TestClient) -> None:
    aura = next(p for p in app_client.get("/api/v1/platforms").json() if p["code"] == "AURA")
    assert [price["country"] for price in aura["prices"]] == ["DE", "ES", "FR", "IT", "PT"]


def test_unknown_country_is_422_on_the_country(app_client: TestClient) -> None:
    response = app_client.get("/api/v1/platforms", params={"country": "XX"})
    assert response.status_code == 422 and response.json()["field"] == "country"


def test_manual_needs_a_login_and_comes_in_the_asked_language(app_client: TestClient) -> None:
    assert app_client.get("/api/v1/platforms/AURA/manual.pdf").status_code == 401
    login(app_client, "workshop@caas.example")
    response = app_client.get("/api/v1/platforms/CIRRUS/manual.pdf", params={"lang": "es"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-language"] == "es"
    text = PdfReader(io.BytesIO(response.content)).pages[0].extract_text()
    assert "Manual del propietario del Cirrus" in text
    again = app_client.get(
        "/api/v1/platforms/CIRRUS/manual.pdf",
        params={"lang": "es"},
        headers={"If-None-Match": response.headers["etag"]},
    )
    assert again.status_code == 304


def test_manual_defaults_to_the_readers_language(app_client: TestClient) -> None:
    login(app_client, "sales.madrid@caas.example")  # a Spanish-speaking salesperson
    response = app_client.get("/api/v1/platforms/aura/manual.pdf")
    assert response.headers["content-language"] == "es"


def test_manual_of_an_unknown_model_is_404_and_an_unknown_language_422(
    app_client: TestClient,
) -> None:
    login(app_client, "operator@caas.example")
    assert app_client.get("/api/v1/platforms/ZEPPELIN/manual.pdf").status_code == 404
    response = app_client.get("/api/v1/platforms/AURA/manual.pdf", params={"lang": "xx"})
    assert response.status_code == 422 and response.json()["field"] == "lang"
