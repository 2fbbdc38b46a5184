"""PostgreSQL restarted under requests: while it is down the API answers 503 with a clear JSON
error and `Retry-After` (never a 500), and once it is back the same API process and the same
worker serve again by themselves: nothing is restarted. A purchase refused with 503 during the
outage and retried with its Idempotency-Key afterwards is made once, reaches the car and is
charged once."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI

from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.ota.keys import SigningMaterial
from caas.protocol.payments import CARD_SUCCEEDS
from caas.seed import DEMO_PASSWORD
from tests.billing.conftest import PaymentSandbox
from tests.conftest import SmtpInbox
from tests.faults.conftest import StartWorker
from tests.faults.processes import PrivatePostgres
from tests.faults.scenario import (
    WAIT,
    assert_invariants,
    converged,
    delivered_car,
    elapsed,
    go_online,
    purchase_row,
    stop_cars,
    wait_for_credentials,
)
from tests.servers import serving
from tests.vehicles.support import CommittedDatabase, eventually

# Processes started and killed on a loaded machine: more room than the suite's 120 s.
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Answer:
    status: int
    body: dict[str, object]
    retry_after: str | None


@dataclass
class Traffic:
    """A customer's app reading its account every few milliseconds over real HTTP."""

    client: httpx.Client
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            response = self.client.get("/api/v1/me")
            body = response.json() if "json" in response.headers.get("content-type", "") else {}
            self.answers.append(
                Answer(response.status_code, body, response.headers.get("retry-after"))
            )
            time.sleep(0.02)  # pacing the traffic, not waiting for anything

    def count(self, status: int) -> int:
        return sum(1 for answer in self.answers if answer.status == status)


async def test_postgres_restart_under_requests(
    private_postgres: PrivatePostgres,
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
    worker = start_worker()
    buyer = delivered_car(database, settings, feature="power_boost")
    await wait_for_credentials(database, [buyer])
    await go_online(buyer, broker, signing)
    await converged(database, [buyer])
    token = payment_sandbox.token(CARD_SUCCEEDS)
    purchase = {
        "json": {"items": [{"offer_id": buyer.offer_id}], "payment_method": token},
        "headers": {"Idempotency-Key": "faults-postgres-0001"},
    }
    try:
        with serving(api) as server, httpx.Client(base_url=server.url, timeout=10) as client:
            login = client.post(
                "/api/v1/auth/login",
                json={"email": buyer.car.customer_email, "password": DEMO_PASSWORD},
            )
            assert login.status_code == 200, login.text
            traffic = Traffic(client)
            reader = threading.Thread(target=traffic.run, daemon=True)
            reader.start()
            post = functools.partial(
                client.post, f"/api/v1/vehicles/{buyer.car.vin}/purchases", **purchase
            )
            try:
                await eventually(lambda: traffic.count(200) >= 3, timeout=WAIT)

                private_postgres.stop()
                await eventually(lambda: traffic.count(503) >= 3, timeout=WAIT)
                refused = await asyncio.to_thread(post)
                assert refused.status_code == 503, refused.text
                down_for = len(traffic.answers)

                private_postgres.start()
                await eventually(
                    lambda: any(a.status == 200 for a in traffic.answers[down_for:]),
                    timeout=WAIT,
                )
                back = next(
                    n for n, a in enumerate(traffic.answers) if n >= down_for and a.status == 200
                )
                await eventually(lambda: len(traffic.answers) >= back + 10, timeout=WAIT)
                created = await asyncio.to_thread(post)
                again = await asyncio.to_thread(post)
            finally:
                traffic.stop.set()
                reader.join(10)

        statuses = {answer.status for answer in traffic.answers}
        assert statuses == {200, 503}, f"answers besides 200 and 503: {statuses}"
        for answer in traffic.answers:
            if answer.status == 503:
                assert answer.body["code"] == "database.unavailable", answer.body
                assert answer.body["message"], answer.body
                assert answer.retry_after is not None and int(answer.retry_after) > 0
        assert refused.json()["code"] == "database.unavailable"
        # Back by itself: from its first answer after the restart, every request is served.
        assert all(answer.status == 200 for answer in traffic.answers[back:])

        # The purchase the outage refused is made once with its key, and the same worker
        # (never restarted) takes it to the car and captures it.
        assert created.status_code == 201, created.text
        assert again.status_code in (200, 201) and again.json()["id"] == created.json()["id"]
        purchase_id = created.json()["id"]
        await assert_invariants(database, payment_sandbox, smtp, [buyer], [purchase_id])
        assert purchase_row(database, purchase_id)["state"] == "active"
        assert worker.alive, "the worker died with the database"
    finally:
        await stop_cars([buyer])
    print(f"PostgreSQL restart under requests: {elapsed(started)}")
