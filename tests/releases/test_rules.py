"""The rollouts' rules without a database: waves, the cars' order, compatibility, decisions."""

from __future__ import annotations

import pytest

from caas.protocol.mqtt import MalformedPayload, SoftwareStep, UsageEvent, decode_event
from caas.releases.rules import (
    ROLLOUT,
    TARGET,
    Compatibility,
    WaveProgress,
    check_waves,
    compatible,
    decide,
    order_key,
    wave_of,
)

VIN = "VCAAURA02TM000001"


def test_waves_reach_their_cumulative_share_of_the_fleet() -> None:
    waves = [1, 10, 50, 100]
    assert [wave_of(rank, 200, waves) for rank in (0, 1, 2, 19, 20, 99, 100, 199)] == [
        1, 1, 2, 2, 3, 3, 4, 4,
    ]  # fmt: skip
    # A small fleet still starts with one car; later waves may be empty.
    assert [wave_of(rank, 3, waves) for rank in range(3)] == [1, 3, 4]


@pytest.mark.parametrize("waves", [[], [10, 5, 100], [0, 100], [10, 50], [50, 50, 100], [10, 120]])
def test_waves_must_grow_to_the_whole_fleet(waves: list[int]) -> None:
    with pytest.raises(ValueError):
        check_waves(waves)


def test_the_order_of_the_cars_is_fixed_by_their_vin() -> None:
    vins = [f"VCAAURA0{n}TM00000{n}" for n in range(10)]
    assert [order_key(vin) for vin in vins] == [order_key(vin) for vin in list(vins)]
    assert len({order_key(vin) for vin in vins}) == len(vins)
    assert sorted(vins, key=order_key) != vins  # spread over the fleet, not by production order


def test_compatibility_checks_model_hardware_and_minimum_version() -> None:
    rule = Compatibility(frozenset({"AURA"}), frozenset({"lidar"}), "7.10.0")
    assert compatible(rule, model="AURA", fitted_hardware={"lidar"}, running="7.10.0")
    assert compatible(rule, model="AURA", fitted_hardware={"lidar", "x"}, running="8.0.0")
    assert not compatible(rule, model="AURA", fitted_hardware={"lidar"}, running="7.9.3")
    assert not compatible(rule, model="AURA", fitted_hardware=set(), running="8.0.0")
    assert not compatible(rule, model="NOVA", fitted_hardware={"lidar"}, running="8.0.0")
    assert not compatible(rule, model="AURA", fitted_hardware={"lidar"}, running="custom")


def _waves(*states: dict[str, int]) -> list[WaveProgress]:
    return [WaveProgress(n, sum(s.values()), s) for n, s in enumerate(states, start=1)]


def test_the_next_wave_starts_when_enough_of_the_current_one_installed() -> None:
    waves = _waves({"installed": 9, "installing": 1}, {"pending": 90})
    assert decide(waves, current_wave=1, success_percent=90, failure_percent=10) == "next_wave"
    assert decide(waves, current_wave=1, success_percent=95, failure_percent=10) == "wait"
    assert decide(waves, current_wave=0, success_percent=95, failure_percent=10) == "next_wave"


def test_a_rollout_halts_past_its_failure_share_of_the_cars_offered() -> None:
    waves = _waves({"installed": 8, "rolled_back": 1, "failed": 1}, {"pending": 90})
    assert decide(waves, current_wave=1, success_percent=80, failure_percent=19) == "halt"
    assert decide(waves, current_wave=1, success_percent=80, failure_percent=20) == "next_wave"


def test_the_last_wave_completes_once_no_car_is_under_way() -> None:
    waves = _waves({"installed": 1}, {"installed": 9, "offered": 1})
    assert decide(waves, current_wave=2, success_percent=90, failure_percent=10) == "wait"
    done = _waves({"installed": 1}, {"installed": 9, "rolled_back": 1})
    assert decide(done, current_wave=2, success_percent=90, failure_percent=10) == "complete"


def test_state_machines_never_go_back() -> None:
    assert TARGET.allows("offered", "installed")
    assert not TARGET.allows("installed", "installing")
    assert not TARGET.allows("rolled_back", "installed")
    assert ROLLOUT.allows("halted", "running") and not ROLLOUT.allows("completed", "running")


def test_the_events_topic_carries_usage_and_software_steps_apart() -> None:
    usage = decode_event(
        f'{{"vin":"{VIN}","seq":1,"at":"2026-01-01T00:00:00Z","feature":"x","unit":"km",'
        '"quantity":1}'
    )
    assert isinstance(usage, UsageEvent)
    step = decode_event(
        f'{{"vin":"{VIN}","seq":2,"at":"2026-01-01T00:00:00Z","release_id":1,"version":"8.0.0",'
        '"step":"rolled_back","software_version":"7.0.0","error":"install_failed"}'
    )
    assert isinstance(step, SoftwareStep) and step.error == "install_failed"
    with pytest.raises(MalformedPayload):
        decode_event(
            f'{{"vin":"{VIN}","seq":2,"at":"2026-01-01T00:00:00Z","release_id":1,'
            '"version":"8.0.0","step":"failed","software_version":"7.0.0"}'
        )
    with pytest.raises(MalformedPayload):
        decode_event(b"not json")
