"""The requirements between a platform's features, checked without a database."""

from __future__ import annotations

import pytest

from caas.catalog.rules import is_software_version, requirement_cycle, requirement_problem

# code: (requires, conflicts)
PLATFORM = {
    "driver_assist": ([], []),
    "motorway_autopilot": (["driver_assist"], []),
    "power_boost": ([], []),
    "eco_mode": ([], ["power_boost"]),
}


def problem(code: str, requires: list[str], conflicts: list[str] | None = None) -> tuple[str, str]:
    found = requirement_problem(
        code, requires=requires, conflicts=conflicts or [], platform=PLATFORM
    )
    assert found is not None
    return found.field, found.code


def test_sound_requirements_have_no_problem() -> None:
    assert (
        requirement_problem(
            "motorway_autopilot",
            requires=["driver_assist"],
            conflicts=["power_boost"],
            platform=PLATFORM,
        )
        is None
    )


def test_an_unknown_code_is_refused_at_its_position() -> None:
    assert problem("power_boost", ["driver_assist", "jetpack"]) == (
        "requires.1",
        "feature.unknown_code",
    )
    assert problem("power_boost", [], ["jetpack"]) == ("conflicts.0", "feature.unknown_code")


def test_a_feature_cannot_name_itself() -> None:
    assert problem("power_boost", ["power_boost"]) == ("requires.0", "feature.refers_to_itself")
    assert problem("power_boost", [], ["power_boost"]) == (
        "conflicts.0",
        "feature.refers_to_itself",
    )


def test_requiring_and_conflicting_with_the_same_code_is_refused() -> None:
    assert problem("power_boost", ["driver_assist"], ["driver_assist"]) == (
        "conflicts.0",
        "feature.requires_and_conflicts",
    )


def test_requiring_a_feature_that_conflicts_with_it_is_refused_both_ways() -> None:
    assert problem("power_boost", ["eco_mode"]) == ("requires.0", "feature.requires_a_conflict")
    assert problem("driver_assist", [], ["motorway_autopilot"]) == (
        "conflicts.0",
        "feature.requires_a_conflict",
    )


def test_a_cycle_of_requirements_is_refused_with_its_path() -> None:
    found = requirement_problem(
        "driver_assist", requires=["motorway_autopilot"], conflicts=[], platform=PLATFORM
    )
    assert found is not None and (found.field, found.code) == (
        "requires",
        "feature.requirement_cycle",
    )
    assert "driver_assist -> motorway_autopilot -> driver_assist" in found.reason


def test_a_longer_cycle_is_found() -> None:
    graph = {"b": ["c"], "c": ["a"], "d": []}
    assert requirement_cycle("a", ["d", "b"], graph) == ["a", "b", "c", "a"]
    assert requirement_cycle("a", ["d"], graph) == []


@pytest.mark.parametrize(
    ("version", "valid"),
    [("7.3.0", True), ("7.3", True), ("10.12.1", True), ("7", False), ("7.3.0-beta", False),
     ("v7.3", False), ("7..3", False), ("", False)],
)  # fmt: skip
def test_software_versions_are_dotted_numbers(version: str, valid: bool) -> None:
    assert is_software_version(version) is valid
