"""Mosquitto restarted during a fleet-wide push: the worker's publications that met the broker
down are retried, the broker keeps its retained manifests and accounts (persistence), the cars
reconnect by themselves, and every car ends on the newest manifest; a purchase paid just
before is active on its car and charged once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.core.history import Actor
from caas.core.outbox import OutboxMessage
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.iot.mosquitto import PrivateMosquitto
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial
from caas.ota.service import PUBLISH_TOPIC
from caas.vehicles.models import Vehicle
from tests.billing.conftest import PaymentSandbox
from tests.conftest import SmtpInbox
from tests.faults.conftest import StartWorker
from tests.faults.scenario import (
    WAIT,
    Buyer,
    assert_invariants,
    buy,
    converged,
    delivered_car,
    elapsed,
    go_online,
    stop_cars,
    wait_for_credentials,
)
from tests.vehicles.support import CommittedDatabase, eventually

# Processes started and killed on a loaded machine: more room than the suite's 120 s.
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(300)]

CARS = 5
OPERATOR = Actor.system("faults")


def _mosquitto(broker: LocalBroker) -> PrivateMosquitto:
    """The broker's process, which this test stops and starts (same port, same directory)."""
    process = broker._mosquitto  # the fixture's own broker, restarted on purpose
    assert process is not None
    return process


def _push(database: CommittedDatabase, buyers: list[Buyer], message: str) -> dict[str, int]:
    """One change for the whole fleet in one transaction (a catalog-wide change): a new
    manifest for every car, carrying `message` to its screen. Each car's new version."""

    def push(session: Session) -> dict[str, int]:
        now = datetime.now(UTC)
        versions = {}
        for buyer in buyers:
            vehicle = session.get_one(Vehicle, buyer.car.vehicle_id)
            versions[buyer.car.vin] = ota.request_configuration(
                session, vehicle, reason="fleet-wide", actor=OPERATOR, now=now, messages=[message]
            ).version
        return versions

    return database.run(push)


def _failed_publications(database: CommittedDatabase, since: datetime) -> int:
    """Publications of manifests that met the broker down (retried later)."""

    def count(session: Session) -> int:
        return (
            session.scalar(
                select(func.count()).where(
                    OutboxMessage.topic == PUBLISH_TOPIC,
                    OutboxMessage.created_at >= since,
                    OutboxMessage.last_error.is_not(None),
                )
            )
            or 0
        )

    return database.run(count)


async def test_a_broker_restart_during_a_fleet_wide_push(
    database: CommittedDatabase,
    settings: Settings,
    broker: LocalBroker,
    signing: SigningMaterial,
    payment_sandbox: PaymentSandbox,
    smtp: SmtpInbox,
    api: FastAPI,
    start_worker: StartWorker,
) -> None:
    started = time.perf_counter()
    start_worker()
    buyers = [delivered_car(database, settings, feature="power_boost") for _ in range(CARS)]
    await wait_for_credentials(database, buyers)
    await asyncio.gather(*(go_online(buyer, broker, signing) for buyer in buyers))
    try:
        await converged(database, buyers)
        since = datetime.now(UTC)
        # An owner pays for an option just before the push (the money held, the option on
        # its way), so the restart meets a purchase as well as the fleet.
        purchase_id = await asyncio.to_thread(
            buy, api, payment_sandbox, buyers[0], key="faults-broker-01"
        )

        _push(database, buyers, "Fleet notice 1")
        mosquitto = _mosquitto(broker)
        mosquitto.stop()  # while the worker publishes the push
        newest = _push(database, buyers, "Fleet notice 2")  # a newer one while it is down
        # Down until the worker has met it (a publication failed and was put off for later).
        await eventually(
            lambda: _failed_publications(database, since) > 0,
            timeout=WAIT,
            what="a publication refused by the broker",
        )
        mosquitto.start()

        await assert_invariants(database, payment_sandbox, smtp, buyers, [purchase_id])
        # The newest push on every car (with the option bought, on the buyer's).
        for buyer in buyers:
            assert buyer.agent is not None
            assert buyer.agent.version == newest[buyer.car.vin], buyer.car.vin
            assert buyer.agent.messages == ["Fleet notice 2"], buyer.car.vin
    finally:
        await stop_cars(buyers)
    print(f"broker restart during a fleet-wide push of {CARS} cars: {elapsed(started)}")
