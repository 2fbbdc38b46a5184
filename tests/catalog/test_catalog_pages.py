"""The operator's catalog pages: features with their offers and prices per country, the feature
form and the offer form, posted as a browser posts them (CSRF token, form key)."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.catalog.models import Feature, Platform
from caas.core.history import subject_history
from caas.store.models import Offer
from tests.web.support import csrf_token, form_key, log_in, submit, text_of

OPERATOR = "operator@caas.example"
AUTOPILOT = "/operator/catalog/CIRRUS/motorway_autopilot"


def feature(db: Session, platform: str, code: str) -> Feature:
    return db.scalars(
        select(Feature)
        .join(Platform, Platform.id == Feature.platform_id)
        .where(Platform.code == platform, Feature.code == code)
    ).one()


def field_value(html: str, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}"\s+value="([^"]*)"', html)
    assert found is not None, f"no field {name}"
    return found.group(1)


def feature_form(**changes: Any) -> dict[str, Any]:
    """The autopilot's form as the page fills it, with `changes`."""
    return {
        "names.en": "Motorway autopilot",
        "names.es": "Piloto automático en autopista",
        "descriptions.en": "Supervised automated driving on motorways.",
        "descriptions.es": "Conducción automatizada supervisada en autopista.",
        "category": "autonomy",
        "min_software_version": "7.3.0",
        "requires": ["driver_assist"],
        "countries": ["ES", "FR", "DE", "IT"],
        "requires_maintenance": "true",
        "active": "true",
        **changes,
    }


def test_the_operators_navigation_leads_to_each_platforms_features_and_offers(
    app_client: TestClient,
) -> None:
    log_in(app_client, OPERATOR)
    overview = app_client.get("/operator/catalog").text
    assert 'href="/operator/catalog"' in overview
    assert 'href="/operator/catalog/CIRRUS"' in overview
    page = text_of(app_client.get("/operator/catalog/CIRRUS").text)
    assert "Motorway autopilot motorway_autopilot On sale" in page
    assert (
        "Autonomous driving · needs hardware · maintenance up to date · software 7.3.0 or newer "
        "· Requires: driver_assist · Sold in: ES, FR, DE, IT" in page
    )
    # Every country's price of a window; none in Portugal, where it is not sold.
    assert "Window · 1 month €129.00 €133.00 €135.00 €132.00 —" in page
    assert "Pay per use · per km €0.05 €0.05 €0.05 €0.05 —" in page
    assert "Pay per use · per hour €1.50 €1.60 €1.60 €1.50 €1.50" in page  # power boost


def test_the_pages_speak_spanish(app_client: TestClient) -> None:
    log_in(app_client, OPERATOR)
    submit(app_client, "/operator/catalog", "/language", {"lang": "es"})
    page = text_of(app_client.get("/operator/catalog/CIRRUS").text)
    assert "Opciones y ofertas del Cirrus" in page
    assert "Periodo · 1 mes" in page and "Piloto automático en autopista" in page


def test_only_the_operator_opens_the_catalog_pages(app_client: TestClient) -> None:
    log_in(app_client, "sales.madrid@caas.example")
    assert app_client.get("/operator/catalog/CIRRUS").status_code == 403
    assert app_client.get(AUTOPILOT).status_code == 403
    assert app_client.get("/operator/catalog/ZEPPELIN").status_code == 403


def test_the_feature_form_round_trip_saves_once_and_records_it(
    app_client: TestClient, db: Session
) -> None:
    log_in(app_client, OPERATOR)
    page = app_client.get(AUTOPILOT).text
    assert field_value(page, "names.en") == "Motorway autopilot"
    assert 'value="driver_assist" checked' in page
    key = form_key(page)
    data = feature_form(
        **{"names.fr": "Pilote d'autoroute", "min_software_version": "7.3.1"},
        countries=["ES", "FR"],
    )
    fields = {"csrf_token": csrf_token(page), "idempotency_key": key, **data}
    saved = app_client.post(AUTOPILOT, data=fields, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == AUTOPILOT
    again = app_client.post(AUTOPILOT, data=fields, follow_redirects=False)
    assert again.status_code == 303  # a double submit acts once
    assert "The feature is saved." in app_client.get(AUTOPILOT).text

    autopilot = feature(db, "CIRRUS", "motorway_autopilot")
    db.refresh(autopilot)
    assert autopilot.names["fr"] == "Pilote d'autoroute"
    assert "de" not in autopilot.names  # emptied on the form
    assert autopilot.min_software_version == "7.3.1"
    assert autopilot.countries == ["ES", "FR"]
    (entry,) = subject_history(db, "feature", autopilot.id)
    assert entry.event == "feature.updated" and entry.actor_label == OPERATOR
    assert entry.details["changes"]["countries"]["to"] == ["ES", "FR"]


def test_the_feature_form_shows_what_is_wrong_next_to_the_field(
    app_client: TestClient, db: Session
) -> None:
    log_in(app_client, OPERATOR)
    driver_assist = "/operator/catalog/CIRRUS/driver_assist"
    cycle = submit(
        app_client,
        driver_assist,
        driver_assist,
        {
            "names.en": "Driver assistance",
            "descriptions.en": "Adaptive cruise control.",
            "category": "safety",
            "requires": ["motorway_autopilot"],
            "countries_everywhere": "true",
            "active": "true",
        },
        with_key=True,
    )
    assert cycle.status_code == 422
    assert 'id="requires-error"' in cycle.text
    assert "driver_assist -&gt; motorway_autopilot -&gt; driver_assist" in cycle.text
    assert 'value="motorway_autopilot" checked' in cycle.text  # what was typed stays
    assert feature(db, "CIRRUS", "driver_assist").requires == []

    bad = submit(
        app_client,
        AUTOPILOT,
        AUTOPILOT,
        feature_form(min_software_version="seven", **{"names.en": ""}),
        with_key=True,
    )
    assert bad.status_code == 422
    assert 'id="names-error"' in bad.text and 'id="min_software_version-error"' in bad.text


def test_withdrawing_a_feature_from_its_form(app_client: TestClient, db: Session) -> None:
    log_in(app_client, OPERATOR)
    data = feature_form()
    del data["active"]  # an unchecked box is not posted
    assert submit(app_client, AUTOPILOT, AUTOPILOT, data, with_key=True).status_code == 303
    assert feature(db, "CIRRUS", "motorway_autopilot").active is False
    assert "Withdrawn" in text_of(app_client.get(AUTOPILOT).text)


def test_the_offer_forms_add_reprice_and_withdraw(app_client: TestClient, db: Session) -> None:
    log_in(app_client, OPERATOR)
    new = "/operator/catalog/AURA/winter_traction/offers/new"
    wrong = submit(
        app_client,
        new,
        "/operator/catalog/AURA/winter_traction/offers",
        {"country": "ES", "kind": "metered", "net": "0,40"},
        with_key=True,
    )
    assert wrong.status_code == 422 and 'id="unit-error"' in wrong.text
    assert 'value="0,40"' in wrong.text

    made = submit(
        app_client,
        new,
        "/operator/catalog/AURA/winter_traction/offers",
        {"country": "ES", "kind": "metered", "unit": "activation", "net": "0,40"},
        with_key=True,
    )
    assert made.status_code == 303
    traction = feature(db, "AURA", "winter_traction")
    offer = db.scalars(
        select(Offer).where(Offer.feature_id == traction.id, Offer.unit == "activation")
    ).one()
    assert (offer.net_minor, offer.country, offer.refund_policy) == (40, "ES", "none")

    page = f"/operator/offers/{offer.id}"
    assert field_value(app_client.get(page).text, "net") == "0.40"
    priced = submit(
        app_client, page, page, {"net": "0.5", "apply_deadline_seconds": "120"}, with_key=True
    )
    assert priced.status_code == 303
    negative = submit(app_client, page, page, {"net": "-3"}, with_key=True)
    assert negative.status_code == 422 and 'id="net-error"' in negative.text
    withdrawn = submit(app_client, page, page, {"action": "withdraw"}, with_key=True)
    assert withdrawn.status_code == 303
    db.refresh(offer)
    assert (offer.net_minor, offer.apply_deadline_seconds, offer.active) == (50, 120, False)
    assert [e.event for e in subject_history(db, "offer", offer.id)] == [
        "offer.created",
        "offer.updated",
        "offer.withdrawn",
    ]
    assert "The offer is withdrawn" in app_client.get("/operator/catalog/AURA/winter_traction").text


def test_the_operator_adds_a_feature_from_the_platform_page(
    app_client: TestClient, db: Session
) -> None:
    log_in(app_client, OPERATOR)
    platform_page = app_client.get("/operator/catalog/AURA").text
    assert 'href="/operator/catalog/AURA/features/new"' in platform_page
    new = "/operator/catalog/AURA/features/new"
    fields = {
        "code": "eco_mode",
        "names.en": "Eco mode",
        "names.es": "Modo eco",
        "descriptions.en": "Longer range, gentler acceleration.",
        "category": "performance",
        "conflicts": ["power_boost"],
        "countries_everywhere": "true",
    }
    taken = submit(app_client, new, "/operator/catalog/AURA/features",
                   {**fields, "code": "power_boost"}, with_key=True)  # fmt: skip
    assert taken.status_code == 409 and 'id="code-error"' in taken.text
    made = submit(app_client, new, "/operator/catalog/AURA/features", fields, with_key=True)
    assert made.status_code == 303
    assert made.headers["location"] == "/operator/catalog/AURA/eco_mode"
    eco = feature(db, "AURA", "eco_mode")
    assert (eco.name, eco.names["es"], eco.conflicts, eco.countries, eco.active) == (
        "Eco mode",
        "Modo eco",
        ["power_boost"],
        None,
        True,
    )
    assert [e.event for e in subject_history(db, "feature", eco.id)] == ["feature.created"]
    assert "No offers yet." in app_client.get("/operator/catalog/AURA/eco_mode").text
