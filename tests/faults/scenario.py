"""What the fault tests do before and check after breaking something: cars delivered to owners
who buy an option over HTTP, simulated cars online on the real broker, and the invariants that
must hold whatever broke.

The invariants (`assert_invariants`):
- every purchase is settled: active with its option on the car and its payment captured once,
  or refunded with its hold released (no purchase lost half way);
- no charge twice: the provider has at most one capture per payment;
- no e-mail twice: no two messages the SMTP server accepted carry the same Message-ID (each
  e-mail's id is derived from its outbox key, so a re-sent one would repeat it);
- every car converges to its newest manifest: the car runs the newest version the platform
  signed for it, and the platform has it as applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.billing.models import Payment
from caas.core.outbox import OutboxMessage
from caas.core.settings import Settings
from caas.iot.local import LocalBroker
from caas.iot.service import find_credential
from caas.ota.keys import SigningMaterial
from caas.ota.models import ConfigurationVersion
from caas.protocol.payments import CARD_SUCCEEDS
from caas.seed import DEMO_PASSWORD
from caas.store.models import Entitlement, Purchase
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from tests.billing.conftest import PaymentSandbox
from tests.conftest import SmtpInbox
from tests.faults.processes import WorkerProcess
from tests.mqtt import V311
from tests.store.conftest import offer, owner_of
from tests.vehicles.support import Car, CommittedDatabase, born_car, deliver, eventually

# A bound for real concurrency between processes on a loaded machine, never a schedule.
WAIT = 30.0


@dataclass
class Buyer:
    """A delivered car, its owner's option on sale, and the car itself once online."""

    car: Car
    offer_id: int
    feature: str
    agent: VehicleAgent | None = None


def delivered_car(database: CommittedDatabase, settings: Settings, *, feature: str) -> Buyer:
    """A car born and delivered to its owner (who can log in), a one-day `feature` offer.
    The broker learns its account from a running worker (`iot` job): wait for that with
    `wait_for_credentials`."""
    now = datetime.now(UTC)
    car = database.run(lambda session: born_car(session, settings=settings, now=now))

    def delivered(session: Session) -> int:
        deliver(session, car, now=now)
        owner = owner_of(session, car, now)
        return offer(session, owner.vehicle, feature, "window", "1D", net_minor=999).id

    return Buyer(car=car, offer_id=database.run(delivered), feature=feature)


async def wait_for_credentials(database: CommittedDatabase, buyers: list[Buyer]) -> None:
    def delivered(session: Session) -> bool:
        for buyer in buyers:
            credential = find_credential(session, buyer.car.vin)
            if credential is None or credential.pending_secret is not None:
                return False
        return True

    await eventually(
        lambda: database.run(delivered), timeout=WAIT, what="the cars' broker accounts"
    )


async def go_online(buyer: Buyer, broker: LocalBroker, signing: SigningMaterial) -> VehicleAgent:
    """The car connects to the broker (it reconnects by itself whenever it loses it)."""
    agent = VehicleAgent(
        CarIdentity(
            vin=buyer.car.vin,
            password=buyer.car.password,
            private_key=Ed25519PrivateKey.generate(),
            root_public_key=signing.root_public_key,
        ),
        BrokerEndpoint(broker.host, broker.port, V311),
        software_version="7.2.0",
    )
    buyer.agent = agent
    agent.start()
    await agent.wait_online(WAIT)
    return agent


def buy(api: FastAPI, sandbox: PaymentSandbox, buyer: Buyer, *, key: str) -> int:
    """The owner logs in and buys the option with a card that works: 201, the money held;
    the purchase's id."""
    token = sandbox.token(CARD_SUCCEEDS)
    with TestClient(api) as client:
        login = client.post(
            "/api/v1/auth/login",
            json={"email": buyer.car.customer_email, "password": DEMO_PASSWORD},
        )
        assert login.status_code == 200, login.text
        response = client.post(
            f"/api/v1/vehicles/{buyer.car.vin}/purchases",
            json={"items": [{"offer_id": buyer.offer_id}], "payment_method": token},
            headers={"Idempotency-Key": key},
        )
    assert response.status_code == 201, response.text
    purchase_id: int = response.json()["id"]
    return purchase_id


def purchase_row(database: CommittedDatabase, purchase_id: int) -> dict[str, Any]:
    def read(session: Session) -> dict[str, Any]:
        purchase = session.get_one(Purchase, purchase_id)
        payment = session.get(Payment, purchase.payment_id) if purchase.payment_id else None
        return {
            "state": purchase.state,
            "payment_state": payment.state if payment else None,
            "reference": payment.reference if payment else None,
            "refunded_minor": payment.refunded_minor if payment else 0,
            "amount_minor": payment.amount_minor if payment else 0,
            "vehicle_id": purchase.vehicle_id,
        }

    return database.run(read)


async def settled(database: CommittedDatabase, purchase_id: int) -> dict[str, Any]:
    """Wait until the purchase is active or refunded; its row then."""
    found: dict[str, Any] = await eventually(
        lambda: (
            (row := purchase_row(database, purchase_id))["state"] in ("active", "refunded") and row
        ),
        timeout=WAIT,
        what=f"purchase {purchase_id} settled",
    )
    return found


def newest_versions(database: CommittedDatabase, buyers: list[Buyer]) -> dict[str, tuple[int, str]]:
    """Each car's newest configuration version and its state, as the platform has them."""

    def read(session: Session) -> dict[str, tuple[int, str]]:
        newest: dict[str, tuple[int, str]] = {}
        for buyer in buyers:
            row = session.execute(
                select(ConfigurationVersion.version, ConfigurationVersion.state)
                .where(ConfigurationVersion.vehicle_id == buyer.car.vehicle_id)
                .order_by(ConfigurationVersion.version.desc())
                .limit(1)
            ).one()
            newest[buyer.car.vin] = (row.version, row.state)
        return newest

    return database.run(read)


async def converged(database: CommittedDatabase, buyers: list[Buyer]) -> None:
    """Wait until every car runs its newest version and the platform has it applied."""

    def done() -> bool:
        newest = newest_versions(database, buyers)
        return all(
            buyer.agent is not None
            and buyer.agent.version == newest[buyer.car.vin][0]
            and newest[buyer.car.vin][1] == "applied"
            for buyer in buyers
        )

    await eventually(done, timeout=WAIT, what="every car on its newest manifest")


def quiet(database: CommittedDatabase) -> bool:
    """No outbox message due now is left undelivered (what is scheduled later may wait)."""

    def read(session: Session) -> int:
        return (
            session.scalar(
                select(func.count()).where(
                    OutboxMessage.done_at.is_(None),
                    OutboxMessage.gave_up_at.is_(None),
                    OutboxMessage.run_after <= func.now(),
                    OutboxMessage.topic.in_(["email.send", "store.capture", "store.void"]),
                )
            )
            or 0
        )

    return database.run(read) == 0


async def assert_invariants(
    database: CommittedDatabase,
    sandbox: PaymentSandbox,
    smtp: SmtpInbox,
    buyers: list[Buyer],
    purchases: list[int],
) -> None:
    """The module's invariants, once every purchase has settled and the mail has gone."""
    rows = [await settled(database, purchase_id) for purchase_id in purchases]
    await converged(database, buyers)
    await eventually(lambda: quiet(database), timeout=WAIT, what="the e-mails sent")
    agents = {buyer.car.vehicle_id: buyer.agent for buyer in buyers}

    def entitlement_states(session: Session, purchase_id: int) -> list[str]:
        return list(
            session.scalars(select(Entitlement.state).where(Entitlement.purchase_id == purchase_id))
        )

    for purchase_id, row in zip(purchases, rows, strict=True):
        captures = sandbox.captures(row["reference"])
        assert captures <= 1, f"purchase {purchase_id} charged {captures} times"
        agent = agents[row["vehicle_id"]]
        assert agent is not None
        states = database.run(lambda session, p=purchase_id: entitlement_states(session, p))
        if row["state"] == "active":
            assert row["payment_state"] == "captured", row
            assert captures == 1, f"purchase {purchase_id} active but captured {captures} times"
            assert states and set(states) == {"active"}, states
        else:
            assert row["payment_state"] in ("voided", "refunded") or (
                row["refunded_minor"] == row["amount_minor"]
            ), row
            assert "active" not in states, states

    # Each car runs the options of its active purchases, and not those refunded.
    for buyer in buyers:
        assert buyer.agent is not None
        paid = [
            row["state"] == "active" for row in rows if row["vehicle_id"] == buyer.car.vehicle_id
        ]
        if any(paid):
            assert buyer.feature in buyer.agent.active_features, buyer.car.vin
        elif paid:
            assert buyer.feature not in buyer.agent.active_features, buyer.car.vin

    ids = Counter(message.get("Message-ID") for message in smtp.messages)
    twice = {message_id: count for message_id, count in ids.items() if count > 1}
    assert not twice, f"e-mails sent more than once: {twice}"


async def stop_cars(buyers: list[Buyer]) -> None:
    """Every car goes offline (bounded: a car stuck on a dead link must not hang the run)."""
    stopping = asyncio.gather(*(buyer.agent.stop() for buyer in buyers if buyer.agent is not None))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping, 15)


async def killed(worker: WorkerProcess) -> int | None:
    """Wait (without holding up the cars on this loop) until `worker` has died; its exit code
    (`-SIGKILL` when it was killed)."""
    await eventually(lambda: not worker.alive, timeout=WAIT, what="the worker's death")
    return worker.wait(5)


def elapsed(started: float) -> str:
    return f"{time.perf_counter() - started:.1f} s"
