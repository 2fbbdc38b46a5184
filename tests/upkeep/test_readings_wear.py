"""The simulated car's wear: fluids, tread, pads, the 12 V battery and the service counters go
down as it is driven and ages, travel in its telemetry under their signal names, and come back
when a workshop has done the work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from caas.core.clock import FixedClock
from caas.upkeep.thresholds import MARK_OF_SIGNAL, MARKS
from caas_sim.vehicle import wear
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from caas_sim.vehicle.screen import create_app
from caas_sim.vehicle.wear import Consumables, WearRates

RATES = WearRates()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def car(clock: FixedClock) -> VehicleAgent:
    identity = CarIdentity(
        vin="VCAAURA02TM000777",
        password="unused",
        private_key=Ed25519PrivateKey.generate(),
        root_public_key=Ed25519PrivateKey.generate().public_key(),
    )
    return VehicleAgent(identity, BrokerEndpoint("127.0.0.1", 1), now=clock.now)


def test_driving_uses_fluids_and_wears_tread_and_pads_per_km() -> None:
    levels = Consumables.new(RATES)
    levels.drive(1000, RATES)
    assert levels.distance_to_service_km == pytest.approx(RATES.service_every_km - 1000)
    assert levels.washer_fluid_percent == pytest.approx(
        100 - 1000 * RATES.washer_fluid_percent_per_km
    )
    assert levels.adblue_percent == pytest.approx(100 - 1000 * RATES.adblue_percent_per_km)
    assert levels.tread_mm == pytest.approx(RATES.tread_new_mm - 1000 * RATES.tread_mm_per_km)
    assert levels.pad_wear_percent == pytest.approx(1000 * RATES.pad_wear_percent_per_km)
    assert levels.battery_health_percent == 100  # the battery ages by time, not km
    levels.drive(1_000_000, RATES)
    assert (levels.washer_fluid_percent, levels.tread_mm, levels.pad_wear_percent) == (0, 0, 100)
    assert levels.distance_to_service_km < 0  # overdue, as the car's display says
    with pytest.raises(ValueError, match="negative"):
        levels.drive(-1, RATES)


def test_time_brings_the_service_nearer_and_ages_the_battery() -> None:
    levels = Consumables.new(RATES)
    levels.age(10 * wear.SECONDS_PER_DAY, RATES)
    assert levels.time_to_service_s == pytest.approx((RATES.service_every_days - 10) * 86_400)
    assert levels.battery_health_percent == pytest.approx(
        100 - 10 * RATES.battery_health_percent_per_day
    )
    assert levels.washer_fluid_percent == 100


def test_a_service_restores_only_what_was_done() -> None:
    levels = Consumables.new(RATES)
    levels.drive(20_000, RATES)
    levels.serviced({"washer_fluid", "service"}, RATES)
    assert levels.washer_fluid_percent == 100
    assert levels.distance_to_service_km == RATES.service_every_km
    assert levels.pad_wear_percent == pytest.approx(20_000 * RATES.pad_wear_percent_per_km)


def test_every_reading_the_car_sends_is_a_mark_the_platform_knows() -> None:
    readings = Consumables.new(RATES).readings()
    assert set(readings) == {mark.signal for mark in MARKS.values()}
    assert set(Consumables.new(RATES).readings(diesel=False)) == set(readings) - {wear.ADBLUE}
    assert {mark.need for mark in MARKS.values()} == set(wear.NEEDS)
    not_vss = {signal for signal, mark in MARK_OF_SIGNAL.items() if not mark.vss}
    assert not_vss == {wear.TYRE_TREAD, wear.BATTERY_12V_HEALTH}


def test_a_cruising_car_wears_at_its_pace_by_its_own_clock() -> None:
    clock = FixedClock(datetime(2027, 3, 1, 9, tzinfo=UTC))
    agent = car(clock)
    agent.cruise(100, pace=60)  # an hour of driving per minute of its clock
    clock.advance(timedelta(minutes=1))
    agent.tick()
    assert agent.odometer_km == pytest.approx(100)
    assert not agent.parked
    fluid = agent.consumables.washer_fluid_percent
    assert fluid == pytest.approx(100 - 100 * RATES.washer_fluid_percent_per_km)
    assert agent.consumables.time_to_service_s == pytest.approx(
        RATES.service_every_days * 86_400 - 3600
    )
    agent.cruise(0)
    clock.advance(timedelta(minutes=1))
    agent.tick()
    assert agent.parked and agent.odometer_km == pytest.approx(100)


@pytest.mark.anyio
async def test_the_simulator_drives_the_car_and_a_workshop_fills_it_up() -> None:
    clock = FixedClock(datetime(2027, 3, 1, 9, tzinfo=UTC))
    agent = car(clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(create_app(agent)), base_url="http://car"
    ) as screen:
        started = await screen.post(
            f"/sim/cars/{agent.vin}/drive", json={"speed_kmh": 120, "pace": 1000}
        )
        assert started.status_code == 200
        assert started.json()["pace"] == 1000 and not started.json()["parked"]
        clock.advance(timedelta(seconds=30))  # 1,000 km at that pace
        agent.tick()
        levels = (await screen.get(f"/api/cars/{agent.vin}")).json()["levels"]
        assert levels[wear.WASHER_FLUID] == pytest.approx(80, abs=0.1)
        done = await screen.post(
            f"/sim/cars/{agent.vin}/serviced", json={"needs": ["washer_fluid"]}
        )
        assert done.json()["levels"][wear.WASHER_FLUID] == 100
        assert done.json()["levels"][wear.BRAKE_PAD_WEAR] > 0
        refused = await screen.post(f"/sim/cars/{agent.vin}/serviced", json={"needs": ["oil"]})
        assert refused.status_code == 422
        page = (await screen.get(f"/cars/{agent.vin}")).text
        assert "Washer fluid (%)" in page
