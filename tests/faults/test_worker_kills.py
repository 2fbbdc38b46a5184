"""`kill -9` of the worker in the middle of a purchase, then a new worker: the purchase ends
active on the car and charged once, or refunded; nothing is lost or done twice.

The worker is killed at a named point (`caas.core.faults`, `CAAS_FAULT_KILL_AT`): between the
payment's authorisation and the manifest's publish, and between the car's `applied` and the
capture (before the provider is asked, and after it took the money but before the platform
committed it, the worst moment for a double charge).
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from fastapi import FastAPI

from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.ota.keys import SigningMaterial
from tests.billing.conftest import PaymentSandbox
from tests.conftest import SmtpInbox
from tests.faults.conftest import StartWorker
from tests.faults.scenario import (
    Buyer,
    assert_invariants,
    buy,
    converged,
    delivered_car,
    elapsed,
    go_online,
    killed,
    newest_versions,
    purchase_row,
    stop_cars,
    wait_for_credentials,
)
from tests.vehicles.support import CommittedDatabase

# Processes started and killed on a loaded machine: more room than the suite's 120 s.
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(300)]

KILLED = -signal.SIGKILL  # multiprocessing's exit code of a process killed by the signal


async def _car_online(
    database: CommittedDatabase,
    settings: Settings,
    broker: LocalBroker,
    signing: SigningMaterial,
    start_worker: StartWorker,
) -> Buyer:
    """A delivered car online with its plan applied, served by a worker that is then stopped
    cleanly (the test starts the one it kills)."""
    worker = start_worker()
    buyer = delivered_car(database, settings, feature="power_boost")
    await wait_for_credentials(database, [buyer])
    await go_online(buyer, broker, signing)
    await converged(database, [buyer])
    worker.stop()
    return buyer


async def test_killed_between_the_authorisation_and_the_publish(
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
    buyer = await _car_online(database, settings, broker, signing, start_worker)
    try:
        purchase_id = await asyncio.to_thread(
            buy, api, payment_sandbox, buyer, key="faults-publish-0001"
        )
        held = purchase_row(database, purchase_id)
        assert (held["state"], held["payment_state"]) == ("delivering", "authorised")

        doomed = start_worker(kill_at=f"ota.publish:{buyer.car.vin}")
        assert await killed(doomed) == KILLED, doomed.log_tail()
        # Killed with the manifest signed and queued but never sent: nothing moved.
        assert purchase_row(database, purchase_id)["state"] == "delivering"
        version, state = newest_versions(database, [buyer])[buyer.car.vin]
        assert state != "applied"
        assert buyer.agent is not None and buyer.agent.version < version
        assert payment_sandbox.captures(held["reference"]) == 0

        start_worker()  # the restarted worker
        await assert_invariants(database, payment_sandbox, smtp, [buyer], [purchase_id])
        assert purchase_row(database, purchase_id)["state"] == "active"
    finally:
        await stop_cars([buyer])
    print(f"kill between authorisation and publish: {elapsed(started)}")


@pytest.mark.parametrize("point", ["store.capture", "store.captured"])
async def test_killed_between_the_cars_applied_and_the_capture(
    point: str,
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
    buyer = await _car_online(database, settings, broker, signing, start_worker)
    try:
        purchase_id = await asyncio.to_thread(
            buy, api, payment_sandbox, buyer, key=f"faults-{point}-01"
        )
        reference = purchase_row(database, purchase_id)["reference"]

        doomed = start_worker(kill_at=f"{point}:{purchase_id}")
        assert await killed(doomed) == KILLED, doomed.log_tail()
        # The car applied it and the platform stored that; the capture never committed.
        assert buyer.agent is not None and buyer.feature in buyer.agent.active_features
        assert newest_versions(database, [buyer])[buyer.car.vin][1] == "applied"
        after_kill = purchase_row(database, purchase_id)
        assert (after_kill["state"], after_kill["payment_state"]) == ("delivering", "authorised")
        # `store.captured`: the provider took the money just before the kill.
        taken = 1 if point == "store.captured" else 0
        assert payment_sandbox.captures(reference) == taken

        start_worker()
        await assert_invariants(database, payment_sandbox, smtp, [buyer], [purchase_id])
        assert purchase_row(database, purchase_id)["state"] == "active"
        assert payment_sandbox.captures(reference) == 1
    finally:
        await stop_cars([buyer])
    print(f"kill at {point}: {elapsed(started)}")
