"""Many cars in one loop: loaded from the fleet file, connected in batches, all online."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from caas.cli import app as cli
from caas.core.clock import FixedClock
from caas.iot.local import LocalBroker
from caas.protocol import mqtt
from caas.protocol.manifest import private_key_to_pem, public_key_b64
from caas.protocol.mqtt import Reported, Status
from caas_sim.vehicle.agent import BrokerEndpoint
from caas_sim.vehicle.fleet import Fleet, FleetFile, FleetFileError, ProvisionedCar
from caas_sim.vehicle.screen import create_app
from tests.sim.conftest import WAIT, Maker, Platform, feature, fresh_vin

pytestmark = pytest.mark.anyio


def provisioned(broker: LocalBroker, maker: Maker, count: int) -> FleetFile:
    """What the factory would write: each car with its account on the broker."""
    cars = []
    for _ in range(count):
        vin = fresh_vin()
        cars.append(
            ProvisionedCar(
                vin=vin,
                password=broker.add_car(vin),
                private_key_pem=private_key_to_pem(Ed25519PrivateKey.generate()).decode(),
                root_public_key=public_key_b64(maker.root),
                model="AURA",
                hardware=["heated_seats"],
                software_version="7.2.0",
                odometer_km=12,
            )
        )
    return FleetFile(cars=cars)


async def test_a_fleet_of_50_cars_connects_and_reports_online(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock, tmp_path: Path
) -> None:
    path = tmp_path / "fleet.json"
    provisioned(mqtt_broker, maker, 50).write(path)
    fleet = Fleet.from_file(
        path, BrokerEndpoint.from_url(mqtt_broker.url), now=clock.now, batch_size=20
    )
    vins = {car.vin for car in fleet}
    first = next(iter(fleet))
    try:
        await fleet.start()
        online_at_start = fleet.online_count
        async with asyncio.timeout(WAIT):
            while {s.vin for s in received_statuses(platform, vins) if s.online} != vins:
                await asyncio.sleep(0.02)

        body = maker.body(first.vin, 1, clock.now(), features=[feature("premium_audio")])
        await platform.publish(first.vin, maker.sign(body))
        await platform.wait_for(Reported, mqtt.REPORTED, first.vin)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(create_app(fleet)), base_url="http://screens"
        ) as client:
            fleet_page = (await client.get("/cars")).text
            screens = (await client.get("/api/cars")).json()
    finally:
        await fleet.stop()

    assert len(fleet) == 50
    assert online_at_start == 50
    assert "50 of 50 cars online" in fleet_page
    assert {s["vin"] for s in screens} == vins
    assert {s["software_version"] for s in screens} == {"7.2.0"}
    assert next(s for s in screens if s["vin"] == first.vin)["config_version"] == 1
    assert fleet.online_count == 0


def received_statuses(platform: Platform, vins: set[str]) -> list[Status]:
    return [s for vin in vins for s in platform.received(Status, mqtt.STATUS, vin)]


async def test_the_fleet_keeps_each_cars_clock(
    mqtt_broker: LocalBroker, maker: Maker, clock: FixedClock
) -> None:
    fleet = Fleet.from_file(
        provisioned(mqtt_broker, maker, 2),
        BrokerEndpoint(mqtt_broker.host, mqtt_broker.port),
        now=clock.now,
    )
    car = next(iter(fleet))
    until = clock.now().replace(hour=18)
    body = maker.body(car.vin, 1, clock.now(), features=[feature("wifi", until=until)])
    car.receive(maker.sign(body))
    clock.set(until)

    fleet.tick()

    assert car.active_features == []
    assert car.version == 1


def test_a_fleet_file_that_is_not_one_is_refused_with_the_place_of_the_mistake(
    tmp_path: Path, mqtt_broker: LocalBroker, maker: Maker
) -> None:
    path = tmp_path / "fleet.json"
    good = json.loads(provisioned(mqtt_broker, maker, 1).model_dump_json())
    good["cars"][0]["vin"] = "VCAAURA02TM000002"  # wrong check digit
    path.write_text(json.dumps(good))

    with pytest.raises(FleetFileError, match=r"cars\.0\.vin"):
        FleetFile.read(path)
    with pytest.raises(FleetFileError, match="No such file"):
        FleetFile.read(tmp_path / "missing.json")


def test_the_fleet_file_is_readable_by_its_owner_only(
    tmp_path: Path, mqtt_broker: LocalBroker, maker: Maker
) -> None:
    path = tmp_path / "fleet.json"
    fleet_file = provisioned(mqtt_broker, maker, 1)
    fleet_file.write(path)

    assert path.stat().st_mode & 0o777 == 0o600
    assert FleetFile.read(path) == fleet_file


def test_caas_sim_vehicles_explains_a_bad_fleet_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_text('{"cars": [{"vin": "nope"}]}')

    result = CliRunner().invoke(
        cli, ["sim", "vehicles", "--fleet-file", str(path), "--broker", "mqtt://127.0.0.1:1"]
    )

    assert result.exit_code == 2
    assert "cars.0.vin" in result.output
    assert "Traceback" not in result.output


def test_caas_sim_vehicles_refuses_more_cars_than_the_file_has(
    tmp_path: Path, mqtt_broker: LocalBroker, maker: Maker
) -> None:
    path = tmp_path / "fleet.json"
    provisioned(mqtt_broker, maker, 2).write(path)

    result = CliRunner().invoke(
        cli,
        [
            "sim",
            "vehicles",
            "--fleet-file",
            str(path),
            "--count",
            "3",
            "--broker",
            "mqtt://127.0.0.1:1",
        ],
    )

    assert result.exit_code == 2
    assert "2 cars" in result.output
