"""More than one of each (issue 8 part 5): two API processes and two workers on one PostgreSQL
and one broker. No job runs twice, the cars' telemetry is split between the workers, what one
API process commits the other shows at once, and a worker killed mid-work loses nothing.

The tests share one cluster (see conftest) and run in this order; the last one kills a worker.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.core.history import Actor
from caas.core.outbox import OutboxMessage
from caas.core.settings import Settings
from caas.notifications.service import queue_email
from caas.ota import service as ota
from caas.protocol.payments import CARD_SUCCEEDS
from caas.seed import DEMO_PASSWORD
from caas.vehicles.models import TelemetrySample, Vehicle
from tests.multi.conftest import WAIT_SECONDS, Cluster, Process
from tests.servers import wait_until

# The cluster starts four processes and a fleet; a busy machine needs more than the default.
pytestmark = pytest.mark.timeout(600)

ACTOR = Actor.system("multi-test")
CONTEXT = {
    "name": "Ana",
    "order_number": "S2026-000007",
    "model": "Aura",
    "dealership": "caas Madrid Castellana",
    "dealership_city": "Madrid",
    "dealership_address": "Paseo de la Castellana 100, 28046 Madrid",
}
EMAILS = 150
# Threads a worker delivers the outbox with (CAAS_WORKER_THREADS, unset in the cluster): at
# most this many e-mails can be between the SMTP server's acceptance and the commit at a kill.
RELAY_THREADS: int = Settings.model_fields["worker_threads"].default


# --- what the test queues, and what became of it ----------------------------------------------


def queue_work(cluster: Cluster, run: str, emails: int) -> list[str]:
    """In one transaction: `emails` e-mails to addresses of this run, and a new configuration
    for every car (a fleet-wide change, published by the workers' express threads). Returns
    the addresses."""
    addresses = [f"multi-{run}-{n}@example.com" for n in range(emails)]
    now = datetime.now(UTC)

    def queue(session: Session) -> None:
        for n, address in enumerate(addresses):
            queue_email(
                session,
                to=address,
                template="order.shipped",
                language="en",
                context=CONTEXT,
                dedupe_key=f"multi:{run}:{n}",
                now=now,
            )
        for vehicle_id in cluster.vehicle_ids:
            vehicle = session.get_one(Vehicle, vehicle_id)
            ota.request_configuration(session, vehicle, reason=f"multi {run}", actor=ACTOR, now=now)

    cluster.run(queue)
    return addresses


def outbox_done(cluster: Cluster) -> bool:
    """No message due now is waiting (later ones, like the store's chains, may)."""

    def check(session: Session) -> bool:
        waiting = session.scalar(
            select(func.count()).where(
                OutboxMessage.done_at.is_(None),
                OutboxMessage.gave_up_at.is_(None),
                OutboxMessage.run_after <= func.now(),
            )
        )
        return waiting == 0

    return bool(cluster.run(check))


def gave_up(cluster: Cluster) -> list[str]:
    def read(session: Session) -> list[str]:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.gave_up_at.isnot(None)))
        return [f"{row.topic}: {row.last_error}" for row in rows]

    result: list[str] = cluster.run(read)
    return result


def mails_to(cluster: Cluster, addresses: list[str]) -> list[Any]:
    wanted = set(addresses)
    return [mail for mail in list(cluster.smtp.messages) if mail.get("To") in wanted]


def sent_by(worker: Process, addresses: list[str]) -> int:
    """How many of these e-mails this worker sent, as its log says."""
    wanted = set(addresses)
    return sum(1 for entry in worker.events("email.sent") if entry.get("to") in wanted)


def telemetry_rows(cluster: Cluster) -> int:
    result: int = cluster.run(
        lambda session: session.scalar(select(func.count(TelemetrySample.id)))
    )
    return result


def telemetry_stored_by(worker: Process) -> tuple[int, int]:
    """(messages received, samples newly stored) by this worker's bridge, from its log."""
    batches = worker.events("mqtt.batch_stored", kind="telemetry")
    return sum(b["received"] for b in batches), sum(b["new"] or 0 for b in batches)


def send_telemetry(cluster: Cluster, *, seconds: float, rate: float) -> int:
    """Every car sends telemetry for `seconds` at `rate` a second; how many samples went out."""
    cluster.cars_process.send(command="telemetry", seconds=seconds, rate=rate)
    answer = cluster.cars_process.expect("telemetry", timeout=WAIT_SECONDS)
    sent: int = answer["sent"]
    assert sent > 0, answer
    return sent


def wait(condition: Any, what: str, cluster: Cluster) -> None:
    try:
        wait_until(condition, timeout=WAIT_SECONDS, interval=0.1)
    except AssertionError:
        tails = "\n".join(f"--- {p.name}\n{p.tail(1500)}" for p in cluster.workers)
        raise AssertionError(f"waited {WAIT_SECONDS} s for {what}\n{tails}") from None


# --- the tests ------------------------------------------------------------------------------


def test_no_job_runs_twice_though_both_workers_take_jobs(cluster: Cluster) -> None:
    run = uuid.uuid4().hex[:8]
    addresses = queue_work(cluster, run, EMAILS)

    wait(lambda: outbox_done(cluster) and cluster.newest_versions_applied(), "the work", cluster)

    mails = mails_to(cluster, addresses)
    per_message = Counter(mail["Message-ID"] for mail in mails)
    assert len(per_message) == EMAILS
    assert [id_ for id_, times in per_message.items() if times > 1] == []
    assert sorted(mail["To"] for mail in mails) == sorted(addresses)
    # Both workers took e-mails, and together they sent each exactly once.
    counts = {worker.name: sent_by(worker, addresses) for worker in cluster.workers}
    assert sum(counts.values()) == EMAILS, counts
    assert all(count > 0 for count in counts.values()), counts
    # No outbox message was delivered by both (nor twice by one).
    deliveries = Counter(
        entry["id"] for worker in cluster.workers for entry in worker.events("outbox.delivered")
    )
    assert [id_ for id_, times in deliveries.items() if times > 1] == []
    assert gave_up(cluster) == []


def test_the_telemetry_stream_is_split_between_the_workers(cluster: Cluster) -> None:
    rows_before = telemetry_rows(cluster)
    before = {worker.name: telemetry_stored_by(worker) for worker in cluster.workers}

    sent = send_telemetry(cluster, seconds=2, rate=5)

    def received() -> dict[str, tuple[int, int]]:
        return {
            worker.name: (
                telemetry_stored_by(worker)[0] - before[worker.name][0],
                telemetry_stored_by(worker)[1] - before[worker.name][1],
            )
            for worker in cluster.workers
        }

    wait(lambda: telemetry_rows(cluster) == rows_before + sent, f"{sent} samples", cluster)
    wait(lambda: sum(new for _, new in received().values()) == sent, "the workers' logs", cluster)
    split = received()
    # Each message went to one worker only (shared subscription), and each stored its part.
    assert sum(got for got, _ in split.values()) == sent, split
    assert all(new > 0 for _, new in split.values()), split
    assert telemetry_rows(cluster) == rows_before + sent


def test_a_purchase_through_one_api_process_is_seen_at_once_through_the_other(
    cluster: Cluster,
) -> None:
    first, second = (httpx.Client(base_url=url, timeout=WAIT_SECONDS) for url in cluster.api_urls)
    with first, second:
        login = first.post(
            "/api/v1/auth/login",
            json={"email": cluster.buyer.customer_email, "password": DEMO_PASSWORD},
        )
        assert login.status_code == 200, login.text
        second.cookies.update(first.cookies)  # the session is the database's, not a process's
        token = cluster.payments.token(CARD_SUCCEEDS)
        body = {"items": [{"offer_id": cluster.buyer_offer_id}], "payment_method": token}
        headers = {"Idempotency-Key": f"multi-purchase-{uuid.uuid4().hex[:12]}"}

        bought = first.post(
            f"/api/v1/vehicles/{cluster.buyer.vin}/purchases", json=body, headers=headers
        )
        assert bought.status_code == 201, bought.text
        purchase = bought.json()

        seen = second.get(f"/api/v1/purchases/{purchase['id']}")
        assert seen.status_code == 200, seen.text
        read = seen.json()
        assert (read["id"], read["vin"], read["gross"]) == (
            purchase["id"],
            cluster.buyer.vin,
            purchase["gross"],
        )
        listed = second.get(f"/api/v1/vehicles/{cluster.buyer.vin}/purchases")
        assert listed.status_code == 200, listed.text
        assert [item["id"] for item in listed.json()] == [purchase["id"]]
        # The same command through the other process is the same purchase, not a second one.
        again = second.post(
            f"/api/v1/vehicles/{cluster.buyer.vin}/purchases", json=body, headers=headers
        )
        assert (again.status_code, again.json()["id"]) == (201, purchase["id"])
        listed = second.get(f"/api/v1/vehicles/{cluster.buyer.vin}/purchases")
        assert [item["id"] for item in listed.json()] == [purchase["id"]]

        def active() -> bool:
            answer = second.get(f"/api/v1/purchases/{purchase['id']}").json()
            return bool(answer["state"] == "active" and answer["payment_state"] == "captured")

        wait(active, "the purchase active and captured", cluster)
    assert cluster.newest_versions_applied()


def test_a_worker_killed_mid_work_loses_nothing(cluster: Cluster) -> None:
    victim, survivor = cluster.workers
    run = uuid.uuid4().hex[:8]
    addresses = queue_work(cluster, run, EMAILS)
    wait(lambda: sent_by(victim, addresses) >= 5, "the victim at work", cluster)

    victim.kill()
    by_victim = sent_by(victim, addresses)
    left = EMAILS - by_victim - sent_by(survivor, addresses)
    assert left > 0, "the survivor had done everything before the kill: nothing to prove"

    wait(lambda: outbox_done(cluster) and cluster.newest_versions_applied(), "the work", cluster)
    mails = mails_to(cluster, addresses)
    per_message = Counter(mail["Message-ID"] for mail in mails)
    assert len(per_message) == EMAILS  # none lost
    # At least once: an e-mail the victim handed to the SMTP server but had not marked done
    # when it died is sent again by the survivor, with the same Message-ID. At most one per
    # thread the victim delivered with.
    twice = [id_ for id_, times in per_message.items() if times > 1]
    assert len(twice) <= RELAY_THREADS and all(per_message[id_] == 2 for id_ in twice), per_message
    # The survivor sent the rest (and the e-mails sent twice, when the victim died before its
    # log line, are among the rest).
    assert EMAILS - by_victim <= sent_by(survivor, addresses) <= EMAILS - by_victim + len(twice)
    assert gave_up(cluster) == []

    # The stream now goes to the survivor alone, and all of it is stored.
    rows_before = telemetry_rows(cluster)
    before = telemetry_stored_by(survivor)
    sent = send_telemetry(cluster, seconds=1, rate=5)
    wait(lambda: telemetry_rows(cluster) == rows_before + sent, f"{sent} samples", cluster)
    wait(
        lambda: telemetry_stored_by(survivor)[1] - before[1] == sent, "the survivor's log", cluster
    )
    assert telemetry_stored_by(survivor)[0] - before[0] == sent
