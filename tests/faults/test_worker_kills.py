"""`kill -9` of the worker in the middle of a purchase, at each of its steps, then a new worker:
the purchase ends active on the car and charged once; nothing is lost or done twice.

One purchase meets three workers killed at named points (`caas.core.faults`,
`CAAS_FAULT_KILL_AT`), each started after the previous one died:
1. between the payment's authorisation and the manifest's publish;
2. between the car's `applied` and the capture, before the provider is asked;
3. after the provider took the money but before the platform committed it (the worst moment
   for a double charge: the next worker captures again with the same provider key).
A fourth worker, not told to die, finishes it. One purchase through all three windows costs
one car's set-up instead of three.
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


async def test_a_purchase_killed_at_every_step(
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
            buy, api, payment_sandbox, buyer, key="faults-kills-0001"
        )
        held = purchase_row(database, purchase_id)
        assert (held["state"], held["payment_state"]) == ("delivering", "authorised")
        reference = held["reference"]

        # 1. Killed with the manifest signed and queued but never sent: nothing moved.
        doomed = start_worker(kill_at=f"ota.publish:{buyer.car.vin}")
        assert await killed(doomed) == KILLED, doomed.log_tail()
        assert purchase_row(database, purchase_id)["state"] == "delivering"
        version, state = newest_versions(database, [buyer])[buyer.car.vin]
        assert state != "applied"
        assert buyer.agent is not None and buyer.agent.version < version
        assert buyer.feature not in buyer.agent.active_features
        assert payment_sandbox.captures(reference) == 0

        # 2. The next worker publishes; the car applies and the platform stores it; killed
        # before the capture.
        doomed = start_worker(kill_at=f"store.capture:{purchase_id}")
        assert await killed(doomed) == KILLED, doomed.log_tail()
        assert buyer.feature in buyer.agent.active_features
        assert newest_versions(database, [buyer])[buyer.car.vin] == (version, "applied")
        row = purchase_row(database, purchase_id)
        assert (row["state"], row["payment_state"]) == ("delivering", "authorised")
        assert payment_sandbox.captures(reference) == 0

        # 3. The next one captures: the provider takes the money, the worker dies before
        # the platform commits it.
        doomed = start_worker(kill_at=f"store.captured:{purchase_id}")
        assert await killed(doomed) == KILLED, doomed.log_tail()
        row = purchase_row(database, purchase_id)
        assert (row["state"], row["payment_state"]) == ("delivering", "authorised")
        assert payment_sandbox.captures(reference) == 1

        start_worker()  # the one that lives
        await assert_invariants(database, payment_sandbox, smtp, [buyer], [purchase_id])
        assert purchase_row(database, purchase_id)["state"] == "active"
        assert payment_sandbox.captures(reference) == 1
    finally:
        await stop_cars([buyer])
    print(f"one purchase killed at three steps: {elapsed(started)}")
