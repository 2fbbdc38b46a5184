"""Rollouts end to end: the operator uploads and publishes a release and starts a rollout over
the API; the worker offers it wave by wave in the cars' signed manifests on a real broker;
simulated cars download the image over HTTP from the platform, check it, install it and reboot
(or roll back), and report each step; the rollout moves on, halts or waits as its cars say."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.releases.conftest import (
    delivered_cars,
    key,
    progress,
    start_car,
    start_rollout,
    upload_release,
)
from tests.servers import ServerThread
from tests.vehicles.support import CommittedDatabase, eventually

from caas.core.history import HistoryEntry
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.notifications.models import Notification
from caas.ota.keys import SigningMaterial
from caas.protocol.manifest import sign_release
from caas.releases import rules
from caas.releases.models import SoftwareRelease
from caas.sales.models import Customer
from caas.vehicles.models import Vehicle
from caas.worker import Worker
from caas_sim.vehicle.agent import VehicleAgent

pytestmark = pytest.mark.anyio


def _newer(version: str) -> str:
    major = version.split(".")[0]
    return f"{major}.1.0"


async def _fleet(
    count: int,
    *,
    committed: CommittedDatabase,
    settings: Settings,
    broker: LocalBroker,
    signing: SigningMaterial,
    http: ServerThread,
    version: str,
    online: list[VehicleAgent],
    failing: int = 0,
) -> list[VehicleAgent]:
    """`count` cars online; the first `failing` in the rollouts' order fail to install."""
    cars = delivered_cars(committed, settings, count, version)
    cars.sort(key=lambda car: rules.order_key(car.vin))
    return [
        await start_car(
            car,
            broker=broker,
            signing=signing,
            platform_url=http.url,
            version=version,
            online=online,
            install_failure_rate=1.0 if rank < failing else 0.0,
        )
        for rank, car in enumerate(cars)
    ]


def _software_of(committed: CommittedDatabase, vin: str) -> str:
    def read(session: Session) -> str:
        return session.scalars(select(Vehicle.software_version).where(Vehicle.vin == vin)).one()

    return committed.run(read)


async def test_a_rollout_passes_its_waves_and_the_cars_run_the_new_version(
    committed: CommittedDatabase,
    platform_settings: Settings,
    mqtt_broker: LocalBroker,
    signing: SigningMaterial,
    worker: Worker,
    platform_http: ServerThread,
    operator: TestClient,
    fleet_version: str,
    online: list[VehicleAgent],
) -> None:
    agents = await _fleet(
        4,
        committed=committed,
        settings=platform_settings,
        broker=mqtt_broker,
        signing=signing,
        http=platform_http,
        version=fleet_version,
        online=online,
    )
    new = _newer(fleet_version)
    release = upload_release(operator, version=new, min_version=fleet_version)
    rollout = start_rollout(
        operator, release["id"], waves=[25, 50, 100], success_percent=100, failure_percent=50
    )
    assert [wave["cars"] for wave in rollout["waves"]] == [1, 1, 2]
    assert rollout["state"] == "running" and rollout["current_wave"] == 1

    await eventually(
        lambda: progress(committed, rollout["id"]).state == "completed", what="completed"
    )
    done = progress(committed, rollout["id"])
    assert {state for state, _, _ in done.targets.values()} == {"installed"}
    assert {agent.vin: done.targets[agent.vin][1] for agent in agents} == {
        agents[0].vin: 1,
        agents[1].vin: 2,
        agents[2].vin: 3,
        agents[3].vin: 3,
    }
    for agent in agents:
        assert agent.software_version == new
        assert agent.update_step == "installed"
        assert _software_of(committed, agent.vin) == new
    await eventually(lambda: all(agent.online for agent in agents), what="back after reboot")

    def waves_in_order(session: Session) -> list[str]:
        rows = session.scalars(
            select(HistoryEntry)
            .where(HistoryEntry.subject_type == "rollout", HistoryEntry.subject_id == rollout["id"])
            .order_by(HistoryEntry.id)
        )
        return [f"{row.event}:{row.details.get('wave')}" for row in rows]

    assert committed.run(waves_in_order) == [
        "rollout.created:None",
        "rollout.running:0",
        "rollout.wave_started:1",
        "rollout.wave_started:2",
        "rollout.wave_started:3",
        "rollout.completed:3",
    ]

    # Each car's file tells the story of its update, step by step.
    def steps(session: Session) -> list[str]:
        vehicle = session.scalars(select(Vehicle).where(Vehicle.vin == agents[0].vin)).one()
        rows = session.scalars(
            select(HistoryEntry.event)
            .where(
                HistoryEntry.customer_id == vehicle.owner_customer_id,
                HistoryEntry.event.like("software.%"),
            )
            .order_by(HistoryEntry.id)
        )
        return list(rows)

    assert committed.run(steps) == [
        "software.offered",
        "software.downloading",
        "software.installing",
        "software.installed",
    ]

    # Its owner heard of the new version when the car was offered it.
    def owner_told(session: Session) -> list[str]:
        vehicle = session.scalars(select(Vehicle).where(Vehicle.vin == agents[0].vin)).one()
        customer = session.get_one(Customer, vehicle.owner_customer_id)
        rows = session.scalars(
            select(Notification.title).where(
                Notification.user_id == customer.user_id,
                Notification.kind == "release.update_available",
            )
        )
        return list(rows)

    assert committed.run(owner_told) == [f"Nuevo software {new} para tu coche"]  # in Spanish


async def test_a_rollout_halts_by_itself_when_too_many_cars_fail_and_they_roll_back(
    committed: CommittedDatabase,
    platform_settings: Settings,
    mqtt_broker: LocalBroker,
    signing: SigningMaterial,
    worker: Worker,
    platform_http: ServerThread,
    operator: TestClient,
    fleet_version: str,
    online: list[VehicleAgent],
) -> None:
    agents = await _fleet(
        4,
        committed=committed,
        settings=platform_settings,
        broker=mqtt_broker,
        signing=signing,
        http=platform_http,
        version=fleet_version,
        online=online,
        failing=2,
    )
    release = upload_release(operator, version=_newer(fleet_version), min_version=fleet_version)
    rollout = start_rollout(
        operator, release["id"], waves=[50, 100], success_percent=100, failure_percent=25
    )
    await eventually(lambda: progress(committed, rollout["id"]).state == "halted", what="halted")
    halted = progress(committed, rollout["id"])
    # The failing cars rolled back and said why; the second wave was never offered.
    first, second = agents[:2], agents[2:]
    assert any(halted.targets[a.vin] == ("rolled_back", 1, "install_failed") for a in first)
    for agent in first:
        assert halted.targets[agent.vin][0] in ("rolled_back", "offered", "downloading",
                                                "installing")  # fmt: skip
        assert agent.software_version == fleet_version
        assert _software_of(committed, agent.vin) == fleet_version
    for agent in second:
        assert halted.targets[agent.vin] == ("pending", 2, None)
        assert agent.update_step is None
    await eventually(lambda: all(a.update_step == "rolled_back" for a in first), what="both back")
    assert first[0].update_error == "install_failed"

    def told(session: Session) -> list[str]:
        rows = session.scalars(
            select(Notification.title).where(Notification.kind == "release.rollout_halted")
        )
        return [title for title in rows if release["version"] in title]

    assert committed.run(told)
    read = operator.get(f"/api/v1/software/rollouts/{rollout['id']}").json()
    assert read["state"] == "halted" and "failed" in read["halt_reason"]
    assert read["waves"][1]["by_state"] == {"pending": 2}


async def test_a_paused_rollout_starts_no_further_wave_until_resumed(
    committed: CommittedDatabase,
    platform_settings: Settings,
    mqtt_broker: LocalBroker,
    signing: SigningMaterial,
    worker: Worker,
    platform_http: ServerThread,
    operator: TestClient,
    fleet_version: str,
    online: list[VehicleAgent],
) -> None:
    agents = await _fleet(
        2,
        committed=committed,
        settings=platform_settings,
        broker=mqtt_broker,
        signing=signing,
        http=platform_http,
        version=fleet_version,
        online=online,
    )
    release = upload_release(operator, version=_newer(fleet_version), min_version=fleet_version)
    rollout = start_rollout(
        operator, release["id"], waves=[50, 100], success_percent=100, failure_percent=50
    )
    pause_key = key()
    paused = operator.post(
        f"/api/v1/software/rollouts/{rollout['id']}/pause", headers={"Idempotency-Key": pause_key}
    )
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    # The car already offered finishes; the rollout, paused, offers nobody else.
    await eventually(lambda: agents[0].update_step == "installed", what="wave 1 installed")
    await eventually(
        lambda: progress(committed, rollout["id"]).targets[agents[0].vin][0] == "installed",
        what="the platform knows",
    )
    await eventually(lambda: not worker_busy(committed), what="the worker idle")
    assert progress(committed, rollout["id"]).targets[agents[1].vin][0] == "pending"
    assert progress(committed, rollout["id"]).state == "paused"
    # A retry of the pause answers the same and changes nothing.
    again = operator.post(
        f"/api/v1/software/rollouts/{rollout['id']}/pause", headers={"Idempotency-Key": pause_key}
    )
    assert again.json() == paused.json()

    resumed = operator.post(
        f"/api/v1/software/rollouts/{rollout['id']}/resume", headers={"Idempotency-Key": key()}
    )
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["current_wave"] == 2
    await eventually(
        lambda: progress(committed, rollout["id"]).state == "completed", what="completed"
    )
    assert agents[1].software_version == _newer(fleet_version)
    cancelled = operator.post(
        f"/api/v1/software/rollouts/{rollout['id']}/cancel", headers={"Idempotency-Key": key()}
    )
    assert cancelled.status_code == 409
    assert cancelled.json()["code"] == "rollout.invalid_transition"


def worker_busy(committed: CommittedDatabase) -> bool:
    from caas.core.outbox import OutboxMessage

    def read(session: Session) -> bool:
        return bool(
            session.scalar(
                select(OutboxMessage.id)
                .where(OutboxMessage.topic == "releases.advance", OutboxMessage.done_at.is_(None))
                .limit(1)
            )
        )

    return committed.run(read)


async def test_a_car_refuses_an_image_whose_hash_does_not_match(
    committed: CommittedDatabase,
    platform_settings: Settings,
    mqtt_broker: LocalBroker,
    signing: SigningMaterial,
    worker: Worker,
    platform_http: ServerThread,
    operator: TestClient,
    fleet_version: str,
    online: list[VehicleAgent],
) -> None:
    (agent,) = await _fleet(
        1,
        committed=committed,
        settings=platform_settings,
        broker=mqtt_broker,
        signing=signing,
        http=platform_http,
        version=fleet_version,
        online=online,
    )
    release = upload_release(operator, version=_newer(fleet_version), min_version=fleet_version)
    # Someone swaps the file on the platform's disk for another of the same size.
    stored = committed.run(lambda s: s.get_one(SoftwareRelease, release["id"]).image_path)
    image = platform_settings.data_dir / "releases" / stored
    image.write_bytes(bytes(len(image.read_bytes())))
    rollout = start_rollout(operator, release["id"], waves=[100], failure_percent=0)

    await eventually(lambda: progress(committed, rollout["id"]).state == "halted", what="halted")
    assert progress(committed, rollout["id"]).targets[agent.vin] == ("failed", 1, "bad_hash")
    assert agent.software_version == fleet_version


async def test_a_car_refuses_a_release_whose_signature_is_not_the_platforms(
    committed: CommittedDatabase,
    platform_settings: Settings,
    mqtt_broker: LocalBroker,
    signing: SigningMaterial,
    worker: Worker,
    platform_http: ServerThread,
    operator: TestClient,
    fleet_version: str,
    online: list[VehicleAgent],
) -> None:
    (agent,) = await _fleet(
        1,
        committed=committed,
        settings=platform_settings,
        broker=mqtt_broker,
        signing=signing,
        http=platform_http,
        version=fleet_version,
        online=online,
    )
    release = upload_release(operator, version=_newer(fleet_version), min_version=fleet_version)

    def forge(session: Session) -> None:
        row = session.get_one(SoftwareRelease, release["id"])
        row.signature = sign_release(
            Ed25519PrivateKey.generate(),
            version=row.version,
            sha256=row.image_sha256,
            size=row.image_size,
            models=list(row.models),
        )

    committed.run(forge)
    rollout = start_rollout(operator, release["id"], waves=[100], failure_percent=0)
    await eventually(lambda: progress(committed, rollout["id"]).state == "halted", what="halted")
    assert progress(committed, rollout["id"]).targets[agent.vin] == ("failed", 1, "bad_signature")
    assert agent.update_error == "bad_signature"
    assert agent.software_version == fleet_version


async def test_a_car_offline_when_offered_gets_its_update_when_it_comes_back(
    committed: CommittedDatabase,
    platform_settings: Settings,
    mqtt_broker: LocalBroker,
    signing: SigningMaterial,
    worker: Worker,
    platform_http: ServerThread,
    operator: TestClient,
    fleet_version: str,
    online: list[VehicleAgent],
) -> None:
    (car,) = delivered_cars(committed, platform_settings, 1, fleet_version)
    release = upload_release(operator, version=_newer(fleet_version), min_version=fleet_version)
    rollout = start_rollout(operator, release["id"], waves=[100], success_percent=100)
    assert rollout["waves"][0]["by_state"] == {"offered": 1}

    agent = await start_car(
        car,
        broker=mqtt_broker,
        signing=signing,
        platform_url=platform_http.url,
        version=fleet_version,
        online=online,
    )
    await eventually(
        lambda: progress(committed, rollout["id"]).state == "completed", what="completed"
    )
    assert agent.software_version == _newer(fleet_version)
