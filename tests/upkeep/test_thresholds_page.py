"""The operator's upkeep page: each model's marks, set from a form with its CSRF token."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.web.support import csrf_token, form_key, log_in, submit, text_of

OPERATOR = "operator@caas.example"
DEALER = "sales.madrid@caas.example"
PAGE = "/operator/upkeep"


def test_the_page_shows_every_models_marks_in_english_and_spanish(app_client: TestClient) -> None:
    log_in(app_client, OPERATOR)
    page = app_client.get(PAGE)
    assert page.status_code == 200
    text = text_of(page.text)
    assert "Upkeep marks per model" in text
    for model in ("Aura AURA", "Boreal BOREAL", "Cirrus CIRRUS"):
        assert model in text
    assert "Vehicle.Body.Windshield.Front.WasherFluid.Level" in text
    assert "Tyre tread" in text and "not in VSS" in text
    assert 'name="AURA.washer_fluid.trip_level" value="15"' in page.text
    assert 'href="/operator/upkeep"' in page.text  # in the operator's menu
    submit(app_client, PAGE, "/language", {"lang": "es", "next": PAGE})
    spanish = text_of(app_client.get(PAGE).text)
    assert "Umbrales de mantenimiento por modelo" in spanish and "Nivel de rearme" in spanish


def test_the_operator_sets_a_models_marks_from_the_form(app_client: TestClient) -> None:
    log_in(app_client, OPERATOR)
    html = app_client.get(PAGE).text
    fields = {
        "csrf_token": csrf_token(html),
        "idempotency_key": form_key(html),
        "AURA.washer_fluid.trip_level": "12,5",
        "AURA.washer_fluid.rearm_level": "45",
        "AURA.brake_pads.trip_level": "",
        "AURA.brake_pads.rearm_level": "",
    }
    saved = app_client.post("/operator/upkeep/AURA", data=fields, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    page = app_client.get(PAGE).text
    assert 'name="AURA.washer_fluid.trip_level" value="12.5"' in page
    assert 'name="AURA.brake_pads.trip_level" value="80"' in page  # left empty: unchanged
    assert 'name="BOREAL.washer_fluid.trip_level" value="15"' in page


def test_a_mark_without_hysteresis_is_shown_next_to_its_field_and_nothing_is_saved(
    app_client: TestClient,
) -> None:
    log_in(app_client, OPERATOR)
    html = app_client.get(PAGE).text
    fields = {
        "csrf_token": csrf_token(html),
        "idempotency_key": form_key(html),
        "AURA.washer_fluid.trip_level": "20",
        "AURA.washer_fluid.rearm_level": "45",
        "AURA.brake_pads.trip_level": "70",
        "AURA.brake_pads.rearm_level": "75",
    }
    refused = app_client.post("/operator/upkeep/AURA", data=fields, follow_redirects=False)
    assert refused.status_code == 422
    assert 'aria-describedby="AURA.brake_pads.rearm_level-error"' in refused.text
    assert "must re-arm below" in text_of(refused.text)
    page = app_client.get(PAGE).text
    assert 'name="AURA.washer_fluid.trip_level" value="15"' in page


def test_a_form_without_its_token_is_refused_and_others_may_not_see_the_page(
    app_client: TestClient,
) -> None:
    log_in(app_client, OPERATOR)
    forged = app_client.post(
        "/operator/upkeep/AURA",
        data={"AURA.washer_fluid.trip_level": "1", "AURA.washer_fluid.rearm_level": "2"},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    app_client.cookies.clear()
    log_in(app_client, DEALER)
    assert app_client.get(PAGE, follow_redirects=False).status_code in (403, 404)
