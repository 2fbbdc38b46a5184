"""What a stage event may do to an order, and what a valid stage event is: no database."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from caas.factory.rules import stage_decision
from caas.protocol.factory import StageEvent, has_car


@pytest.mark.parametrize(
    ("state", "stage", "decision"),
    [
        ("waiting_for_factory", "accepted", "apply"),
        ("waiting_for_factory", "assembly", "apply"),
        ("ordered", "accepted", "apply"),
        ("accepted", "paint", "apply"),
        ("shipped", "at_dealer", "apply"),
        ("paint", "paint", "stale"),
        ("paint", "body", "stale"),
        ("at_dealer", "shipped", "stale"),
        ("registering", "at_dealer", "stale"),
        ("delivered", "shipped", "stale"),
        ("awaiting_deposit", "accepted", "refuse"),
        ("cancelled", "accepted", "refuse"),
    ],
)
def test_stage_decision(state: str, stage: str, decision: str) -> None:
    assert stage_decision(state, stage) == decision


def event(stage: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "order_id": "S2026-000001",
        "factory_reference": "FO-1",
        "sequence": 1,
        "stage": stage,
        "occurred_at": "2026-03-01T10:00:00+01:00",
        **extra,
    }


CAR = {"vin": "1M8GDM9AXKP042788", "public_key": base64.b64encode(b"k" * 32).decode()}


def test_the_car_travels_with_every_event_from_production_on() -> None:
    assert not has_car("paint")
    assert has_car("assembly") and has_car("at_dealer")
    assert StageEvent.model_validate(event("assembly", **CAR)).vin == CAR["vin"]
    assert StageEvent.model_validate(event("shipped", **CAR)).public_key == CAR["public_key"]
    with pytest.raises(ValidationError, match="carries the car"):
        StageEvent.model_validate(event("assembly"))
    with pytest.raises(ValidationError, match="no vin before it"):
        StageEvent.model_validate(event("paint", **CAR))


def test_public_key_is_32_raw_bytes_in_base64() -> None:
    with pytest.raises(ValidationError, match="32 bytes"):
        StageEvent.model_validate(
            event("assembly", vin=CAR["vin"], public_key=base64.b64encode(b"k" * 31).decode())
        )
    with pytest.raises(ValidationError, match="base64"):
        StageEvent.model_validate(event("assembly", vin=CAR["vin"], public_key="not base64!"))
