"""The operator sets each model's upkeep marks; the hysteresis is checked, nobody else may."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import subject_history
from caas.core.settings import Settings
from caas.upkeep.readings_models import UpkeepThreshold
from tests.files.customers import sold_customer
from tests.web.support import log_in

OPERATOR = "operator@caas.example"
DEALER = "sales.madrid@caas.example"
URL = "/api/v1/upkeep/thresholds/AURA"


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def marks(answer: dict[str, object]) -> dict[str, dict[str, object]]:
    assert isinstance(answer["marks"], list)
    return {m["mark"]: m for m in answer["marks"]}


def test_every_demo_model_starts_with_the_default_marks(app_client: TestClient) -> None:
    log_in(app_client, OPERATOR)
    for platform in ("AURA", "BOREAL", "CIRRUS"):
        answer = app_client.get(f"/api/v1/upkeep/thresholds/{platform}")
        assert answer.status_code == 200
        shown = marks(answer.json())
        assert shown["washer_fluid"]["trip_level"] == 15
        assert shown["washer_fluid"]["rearm_level"] == 40
        assert shown["washer_fluid"]["signal"] == "Vehicle.Body.Windshield.Front.WasherFluid.Level"
        assert shown["brake_pads"]["direction"] == "above"
        assert shown["tyre_tread"]["vss"] is False
        assert shown["service_time"]["unit"] == "days"


def test_the_operator_sets_a_mark_once_per_key_and_it_is_in_the_history(
    app_client: TestClient, db: Session
) -> None:
    log_in(app_client, OPERATOR)
    headers = key()
    body = {"marks": [{"mark": "washer_fluid", "trip_level": 20, "rearm_level": 50}]}
    first = app_client.put(URL, json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert marks(first.json())["washer_fluid"]["trip_level"] == 20
    again = app_client.put(URL, json=body, headers=headers)
    assert again.json() == first.json()
    aura = app_client.get(URL).json()
    assert marks(aura)["washer_fluid"]["rearm_level"] == 50
    assert marks(aura)["adblue"]["trip_level"] == 10  # not listed: unchanged
    boreal = app_client.get("/api/v1/upkeep/thresholds/BOREAL").json()
    assert marks(boreal)["washer_fluid"]["trip_level"] == 15
    platform_id = db.scalar(
        select(UpkeepThreshold.platform_id).where(
            UpkeepThreshold.mark == "washer_fluid", UpkeepThreshold.trip_level == 20
        )
    )
    assert platform_id is not None
    changes = [
        e for e in subject_history(db, "platform", platform_id) if e.event == "upkeep.threshold_set"
    ]
    assert len(changes) == 1
    assert changes[0].actor_kind == "operator"
    assert changes[0].details["before"] == {"trip_level": 15, "rearm_level": 40}


def test_a_rearm_level_not_beyond_the_trip_level_is_refused_and_nothing_changes(
    app_client: TestClient,
) -> None:
    log_in(app_client, OPERATOR)
    cases = [
        # washer fluid trips below: it must re-arm above
        ([{"mark": "washer_fluid", "trip_level": 20, "rearm_level": 20}], "marks.0.rearm_level"),
        # brake pads trip above: they must re-arm below
        (
            [
                {"mark": "washer_fluid", "trip_level": 20, "rearm_level": 45},
                {"mark": "brake_pads", "trip_level": 70, "rearm_level": 90},
            ],
            "marks.1.rearm_level",
        ),
        ([{"mark": "washer_fluid", "trip_level": -1, "rearm_level": 40}], "marks.0.trip_level"),
        ([{"mark": "washer_fluid", "trip_level": 15, "rearm_level": 140}], "marks.0.rearm_level"),
        ([{"mark": "oil", "trip_level": 1, "rearm_level": 2}], "marks.0.mark"),
    ]
    for body, field in cases:
        answer = app_client.put(URL, json={"marks": body}, headers=key())
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field
    malformed = app_client.put(
        URL, json={"marks": [{"mark": "washer_fluid", "trip_level": "low"}]}, headers=key()
    )
    assert malformed.status_code == 422
    shown = marks(app_client.get(URL).json())
    assert (shown["washer_fluid"]["trip_level"], shown["brake_pads"]["rearm_level"]) == (15, 30)


def test_a_change_without_an_idempotency_key_is_refused(app_client: TestClient) -> None:
    log_in(app_client, OPERATOR)
    body = {"marks": [{"mark": "washer_fluid", "trip_level": 20, "rearm_level": 50}]}
    answer = app_client.put(URL, json=body)
    assert answer.status_code in (400, 422), answer.text
    assert marks(app_client.get(URL).json())["washer_fluid"]["trip_level"] == 15


def test_an_unknown_model_is_not_found(app_client: TestClient) -> None:
    log_in(app_client, OPERATOR)
    assert app_client.get("/api/v1/upkeep/thresholds/ZEPHYR").status_code == 404


def test_only_the_operator_reads_or_sets_the_marks(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    assert app_client.get(URL).status_code == 401
    customer = sold_customer(db, settings=settings, now=clock.now())
    db.commit()
    body = {"marks": [{"mark": "washer_fluid", "trip_level": 1, "rearm_level": 2}]}
    for email in (customer.user.email, DEALER):
        app_client.cookies.clear()
        log_in(app_client, email)
        assert app_client.get(URL).status_code == 403
        assert app_client.put(URL, json=body, headers=key()).status_code == 403
    app_client.cookies.clear()
    log_in(app_client, OPERATOR)
    assert marks(app_client.get(URL).json())["washer_fluid"]["trip_level"] == 15
