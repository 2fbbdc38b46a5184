"""What a car must run and what it could run: the pure rules, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from caas.ota.rules import (
    CatalogFeature,
    Entitlement,
    add_months,
    capability,
    feature_states,
    plan_entitlements,
    software_at_least,
    state_after_report,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CATALOG = [
    CatalogFeature("winter_traction", "Winter traction", "traction"),
    CatalogFeature("driver_assist", "Driver assistance", "safety", needs_hardware=True),
    CatalogFeature("entertainment", "Entertainment", "entertainment", parameters={"screens": 2}),
    CatalogFeature("power_boost", "+50 % power", "performance", parameters={"percent": 50}),
]


def test_every_feature_of_the_platform_is_listed_and_only_entitled_ones_are_on() -> None:
    until = NOW + timedelta(days=30)
    states = feature_states(CATALOG, [Entitlement("power_boost", NOW, until, "plan")], at=NOW)
    assert [s.code for s in states] == sorted(f.code for f in CATALOG)
    on = {s.code: s for s in states if s.enabled}
    assert list(on) == ["power_boost"]
    assert (on["power_boost"].valid_from, on["power_boost"].valid_until) == (NOW, until)
    assert on["power_boost"].parameters == {"percent": 50}


@pytest.mark.parametrize(
    ("code", "drives"),
    [
        ("power_boost", True),
        ("driver_assist", True),
        ("winter_traction", True),
        ("entertainment", False),
    ],
)
def test_power_assistance_autopilot_and_traction_affect_driving(code: str, drives: bool) -> None:
    states = {s.code: s for s in feature_states(CATALOG, [], at=NOW)}
    assert states[code].affects_driving is drives


def test_the_plan_is_on_from_delivery_for_the_service_period() -> None:
    delivered = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    (entitlement,) = plan_entitlements(
        ["driver_assist"], delivered_at=delivered, service_period_months=13
    )
    assert entitlement.valid_from == delivered
    assert entitlement.valid_until == datetime(2027, 2, 28, 10, 0, tzinfo=UTC)


def test_nothing_is_on_before_delivery() -> None:
    assert plan_entitlements(["driver_assist"], delivered_at=None, service_period_months=48) == []


def test_add_months_clamps_to_the_end_of_the_month() -> None:
    assert add_months(datetime(2028, 1, 31, tzinfo=UTC), 1) == datetime(2028, 2, 29, tzinfo=UTC)
    assert add_months(datetime(2026, 11, 15, tzinfo=UTC), 14) == datetime(2028, 1, 15, tzinfo=UTC)


def test_an_ended_window_is_off_and_touching_windows_merge() -> None:
    day = timedelta(days=1)
    entitlements = [
        Entitlement("power_boost", NOW - 10 * day, NOW - day, "plan"),
        Entitlement("winter_traction", NOW - day, NOW + day, "plan"),
        Entitlement("winter_traction", NOW + day, NOW + 5 * day, "purchase"),
        Entitlement("winter_traction", NOW + 9 * day, NOW + 12 * day, "purchase"),
    ]
    states = {s.code: s for s in feature_states(CATALOG, entitlements, at=NOW)}
    assert states["power_boost"].enabled is False
    traction = states["winter_traction"]
    # The later, separate window comes in the version issued when this one ends.
    assert (traction.valid_from, traction.valid_until) == (NOW - day, NOW + 5 * day)


def test_an_open_ended_entitlement_is_for_the_cars_life() -> None:
    states = {
        s.code: s
        for s in feature_states(CATALOG, [Entitlement("entertainment", NOW, None, "x")], at=NOW)
    }
    assert states["entertainment"].enabled and states["entertainment"].valid_until is None


def test_a_feature_without_its_hardware_cannot_run() -> None:
    assist = CATALOG[1]
    assert capability(assist, fitted_hardware=frozenset(), software_version="7.2.0") == (
        "hardware_missing"
    )
    assert (
        capability(assist, fitted_hardware=frozenset({"driver_assist"}), software_version="7.2.0")
        is None
    )


def test_a_feature_needing_newer_software_cannot_run() -> None:
    feature = CatalogFeature("autopilot", "Autopilot", "autonomy", min_software_version="7.10")
    assert capability(feature, fitted_hardware=frozenset(), software_version="7.9.3") == (
        "software_too_old"
    )
    assert capability(feature, fitted_hardware=frozenset(), software_version="7.10.0") is None
    assert software_at_least("8.0", "7.10.2")


@pytest.mark.parametrize(
    ("current", "status", "reason", "newest", "after"),
    [
        ("pending", "applied", None, True, "applied"),
        ("pending", "rejected", "bad_signature", True, "rejected"),
        ("pending", "deferred", "waiting_to_be_parked", True, "deferred"),
        ("deferred", "applied", None, True, "applied"),
        ("superseded", "applied", None, False, "applied"),  # a late answer is the car's truth
        ("applied", "applied", None, True, None),  # a duplicate
        ("applied", "rejected", "stale_version", False, None),  # a replay refused
        ("deferred", "deferred", "waiting_to_be_parked", True, None),
        # A re-sent manifest the car had applied (its first answer lost): it runs it.
        ("pending", "rejected", "stale_version", True, "applied"),
        ("superseded", "rejected", "stale_version", False, "rejected"),
    ],
)
def test_the_cars_answer_settles_the_version(
    current: str, status: str, reason: str | None, newest: bool, after: str | None
) -> None:
    assert state_after_report(current, status, reason, newest=newest) == after
