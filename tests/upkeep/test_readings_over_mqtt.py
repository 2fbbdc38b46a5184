"""End to end over a real broker: a simulated car driven fast runs low on washer fluid, its
telemetry reaches the worker's bridge, and exactly one washer fluid order is proposed, however
long the level stays low or wavers around its mark."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from caas.core.outbox import OutboxMessage
from caas.upkeep import readings
from caas.upkeep.models import Part, PartPrice, ServiceOrder
from caas.upkeep.readings_models import UpkeepLevel
from caas.vehicles.models import VehicleState
from caas_sim.vehicle import wear
from caas_sim.vehicle.agent import VehicleAgent
from tests.mqtt import mqtt_broker
from tests.ota.test_configuration_delivery import (
    World,
    online,
    own_embedded_broker,
    platform_broker,
    platform_settings,
    start,
    worker,
    world,
)
from tests.vehicles.support import committed, eventually, signing

__all__ = [
    "committed",
    "mqtt_broker",
    "online",
    "own_embedded_broker",
    "platform_broker",
    "platform_settings",
    "signing",
    "worker",
    "world",
]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def washer_fluid_priced(session: Session) -> None:
    session.execute(
        insert(Part)
        .values(code="test-washer-fluid", kind="part", need="washer_fluid", name="Washer fluid")
        .on_conflict_do_nothing()
    )
    part_id = session.scalar(select(Part.id).where(Part.code == "test-washer-fluid"))
    session.execute(
        insert(PartPrice)
        .values(part_id=part_id, country="ES", net_minor=900, currency="EUR")
        .on_conflict_do_nothing()
    )


async def test_a_car_driven_fast_runs_low_on_washer_fluid_and_gets_exactly_one_order(
    world: World, online: list[VehicleAgent]
) -> None:
    world.database.run(washer_fluid_priced)
    car = world.car()
    agent = await start(world.agent(car), online)
    # An hour of motorway per 50 ms of its clock: about 2,000 km a second of the test.
    agent.cruise(120, pace=60_000)
    while agent.consumables.washer_fluid_percent > 5:
        await asyncio.sleep(0.05)
        agent.tick()
        assert await agent.send_telemetry()
    agent.cruise(0)
    # The level wavers around its mark (the tank sloshing, a splash of water).
    for level in (16, 14, 15.5, 13, 30, 12):
        agent.consumables.set(washer_fluid_percent=level)
        await asyncio.sleep(0.05)
        assert await agent.send_telemetry()
    last_seq = agent._telemetry_seq

    def proposed(session: Session) -> list[ServiceOrder]:
        query = select(ServiceOrder).where(ServiceOrder.vehicle_id == car.vehicle_id)
        return list(session.scalars(query))

    orders = await eventually(lambda: world.database.run(proposed) or None, what="an order")

    def all_read(session: Session) -> UpkeepLevel | None:
        state = session.get(VehicleState, car.vehicle_id)
        if state is None or state.telemetry_seq != last_seq:
            return None
        return session.get(UpkeepLevel, (car.vehicle_id, "washer_fluid"))

    level = await eventually(lambda: world.database.run(all_read), what="every sample stored")
    assert (level.tripped, level.trips) == (True, 1)
    orders = world.database.run(proposed)
    assert [(o.need, o.state) for o in orders] == [("washer_fluid", "proposed")]
    assert orders[0].detail["signal"] == wear.WASHER_FLUID

    def jobs(session: Session) -> int:
        return (
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(
                    OutboxMessage.topic == readings.PROPOSE_TOPIC,
                    OutboxMessage.dedupe_key.like(f"{readings.PROPOSE_TOPIC}:{car.vehicle_id}:%"),
                )
            )
            or 0
        )

    assert world.database.run(jobs) == 1
