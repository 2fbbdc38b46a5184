"""The operator manages the features of each platform over the API; everyone signed in reads
them."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.catalog.models import Feature
from caas.core.history import HistoryEntry, subject_history
from tests.files.customers import login

OPERATOR = "operator@caas.example"
DEALER = "sales.madrid@caas.example"  # writes in Spanish
FEATURES = "/api/v1/platforms/CIRRUS/features"


def new_feature(**overrides: Any) -> dict[str, Any]:
    return {
        "code": "lane_change_assist",
        "names": {"en": "Lane change assist", "es": "Asistente de cambio de carril"},
        "descriptions": {"en": "Changes lanes when you signal.", "es": "Cambia de carril."},
        "category": "safety",
        "needs_hardware": True,
        "requires": ["driver_assist"],
        "countries": ["ES", "FR"],
        "min_software_version": "7.3.1",
        "requires_maintenance": True,
        **overrides,
    }


def post(client: TestClient, body: dict[str, Any], key: str = "create-lca-0001") -> Any:
    return client.post(FEATURES, json=body, headers={"Idempotency-Key": key})


def patch(client: TestClient, code: str, body: dict[str, Any], key: str) -> Any:
    return client.patch(f"{FEATURES}/{code}", json=body, headers={"Idempotency-Key": key})


def test_anyone_signed_in_reads_a_platforms_features_in_their_language(
    app_client: TestClient,
) -> None:
    assert app_client.get(FEATURES).status_code == 401
    login(app_client, DEALER)
    features = {f["code"]: f for f in app_client.get(FEATURES).json()}
    assert set(features) == {
        "power_boost",
        "driver_assist",
        "motorway_autopilot",
        "climate_plus",
    }
    autopilot = features["motorway_autopilot"]
    assert autopilot["name"] == "Piloto automático en autopista"
    assert autopilot["names"]["de"] == "Autobahn-Autopilot"
    assert autopilot["requires"] == ["driver_assist"]
    assert autopilot["min_software_version"] == "7.3.0"
    assert autopilot["countries"] == ["ES", "FR", "DE", "IT"]
    assert autopilot["requires_maintenance"] is True
    assert features["power_boost"]["parameters"] == {"percent": 50}
    assert app_client.get("/api/v1/platforms/ZEPPELIN/features").status_code == 404


def test_the_operator_adds_a_feature_once_per_key_and_it_is_recorded(
    app_client: TestClient, db: Session
) -> None:
    login(app_client, OPERATOR)
    first = post(app_client, new_feature())
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["name"] == "Lane change assist" and created["active"] is True
    assert created["countries"] == ["ES", "FR"] and created["requires"] == ["driver_assist"]

    again = post(app_client, new_feature())
    assert again.status_code == 201 and again.json() == created
    count = select(func.count()).select_from(Feature).where(Feature.code == "lane_change_assist")
    assert db.scalar(count) == 1

    reused = post(app_client, new_feature(category="comfort"))
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency.key_reused"
    duplicate = post(app_client, new_feature(), key="create-lca-0002")
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "feature.exists"

    (entry,) = subject_history(db, "feature", created["id"])
    assert (entry.event, entry.actor_kind, entry.actor_label) == (
        "feature.created",
        "operator",
        OPERATOR,
    )
    assert entry.details["requires"] == ["driver_assist"]


def test_a_command_without_an_idempotency_key_is_refused(app_client: TestClient) -> None:
    login(app_client, OPERATOR)
    response = app_client.post(FEATURES, json=new_feature())
    assert response.status_code == 422 and response.json()["field"] == "Idempotency-Key"


@pytest.mark.parametrize("email", [DEALER, "workshop@caas.example"])
def test_only_the_operator_changes_the_catalog(app_client: TestClient, email: str) -> None:
    login(app_client, email)
    assert post(app_client, new_feature()).status_code == 403
    response = patch(app_client, "power_boost", {"active": False}, "withdraw-pb-0001")
    assert response.status_code == 403 and response.json()["code"] == "auth.forbidden"


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"requires": ["jetpack"]}, "requires.0", "feature.unknown_code"),
        ({"conflicts": ["lane_change_assist"]}, "conflicts.0", "feature.refers_to_itself"),
        (
            {"requires": ["driver_assist"], "conflicts": ["driver_assist"]},
            "conflicts.0",
            "feature.requires_and_conflicts",
        ),
        ({"countries": ["ES", "XX"]}, "countries.1", "feature.unknown_country"),
        ({"min_software_version": "seven"}, "min_software_version", "invalid_input"),
        ({"names": {"en": "Lane change", "xx": "?"}}, "names.xx.[key]", "invalid_input"),
        ({"names": {"es": "Cambio de carril"}}, "names", "invalid_input"),
        ({"category": "jetpacks"}, "category", "invalid_input"),
        ({"code": "Lane Change"}, "code", "invalid_input"),
        ({"requires": ["driver_assist", "driver_assist"]}, "requires", "invalid_input"),
    ],
)
def test_a_wrong_feature_is_a_422_naming_the_field_and_the_reason(
    app_client: TestClient, overrides: dict[str, Any], field: str, code: str
) -> None:
    login(app_client, OPERATOR)
    response = post(app_client, new_feature(**overrides))
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["field"], body["code"]) == (field, code)
    assert body["message"]


def test_requirements_that_go_round_in_a_circle_are_refused(
    app_client: TestClient, db: Session
) -> None:
    login(app_client, OPERATOR)
    response = patch(app_client, "driver_assist", {"requires": ["motorway_autopilot"]}, "cycle-01")
    assert response.status_code == 422
    body = response.json()
    assert (body["field"], body["code"]) == ("requires", "feature.requirement_cycle")
    assert "driver_assist -> motorway_autopilot -> driver_assist" in body["message"]
    assert db.scalar(select(func.count()).select_from(HistoryEntry).where(
        HistoryEntry.subject_type == "feature")) == 0  # fmt: skip


def test_the_operator_changes_withdraws_and_reinstates_a_feature(
    app_client: TestClient, db: Session
) -> None:
    login(app_client, OPERATOR)
    changed = patch(
        app_client,
        "power_boost",
        {"parameters": {"percent": 40}, "countries": ["ES"], "min_software_version": "7.3.1"},
        "change-pb-0001",
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["parameters"] == {"percent": 40}
    assert changed.json()["countries"] == ["ES"]

    withdrawn = patch(app_client, "power_boost", {"active": False}, "withdraw-pb-0001")
    assert withdrawn.json()["active"] is False
    retried = patch(app_client, "power_boost", {"active": False}, "withdraw-pb-0001")
    assert retried.json() == withdrawn.json()

    # Withdrawn: the operator still sees it, others do not.
    listed = {f["code"]: f["active"] for f in app_client.get(FEATURES).json()}
    assert listed["power_boost"] is False
    reinstated = patch(app_client, "power_boost", {"active": True}, "reinstate-pb-0001")
    assert reinstated.json()["active"] is True
    cleared = patch(app_client, "power_boost", {"countries": None}, "everywhere-pb-01")
    assert cleared.json()["countries"] is None

    feature_id = changed.json()["id"]
    events = [(e.event, e.actor_label) for e in subject_history(db, "feature", feature_id)]
    assert events == [
        ("feature.updated", OPERATOR),
        ("feature.withdrawn", OPERATOR),
        ("feature.reinstated", OPERATOR),
        ("feature.updated", OPERATOR),
    ]
    first = subject_history(db, "feature", feature_id)[0]
    assert first.details["changes"]["parameters"] == {
        "from": {"percent": 50},
        "to": {"percent": 40},
    }
    assert first.details["changes"]["min_software_version"] == {"from": "7.2.0", "to": "7.3.1"}


def test_a_withdrawn_feature_is_hidden_from_others(app_client: TestClient) -> None:
    login(app_client, OPERATOR)
    assert patch(app_client, "climate_plus", {"active": False}, "withdraw-cp-01").status_code == 200
    login(app_client, DEALER)
    assert "climate_plus" not in {f["code"] for f in app_client.get(FEATURES).json()}


def test_an_unknown_feature_is_404(app_client: TestClient) -> None:
    login(app_client, OPERATOR)
    response = patch(app_client, "jetpack", {"active": False}, "withdraw-jp-01")
    assert response.status_code == 404 and response.json()["code"] == "feature.not_found"
