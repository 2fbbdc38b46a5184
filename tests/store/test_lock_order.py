"""One lock order for a car's transactions: its row first, then its purchases by id, then its
configuration versions (`caas.ota.service.lock_vehicle`). The concurrency soak found three
deadlocks where transactions took them in other orders (issue 8 part 4): the car's `applied`
answer (version, then purchases), the purchase deadline job (purchase, then the car's row,
then its versions) and a purchase's delivery (payment, purchase, the car's row, versions).

Each test runs the real transactions in threads on their own connections and holds each one
right after its first lock (`FirstLocks`) until every other one has taken its own first lock,
is waiting for a lock, or has finished: in the old orders they then wait for each other in a
circle and PostgreSQL rolls one back (DeadlockDetected), every time; in the one order the
later ones wait for the first and all go through.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.outbox import OutboxMessage
from caas.core.settings import Settings
from caas.ota import service as ota
from caas.ota.models import ConfigurationVersion
from caas.protocol.mqtt import Reported
from caas.protocol.payments import CARD_SUCCEEDS
from caas.store import purchases
from caas.store.models import Entitlement, Purchase
from tests.billing.conftest import PaymentSandbox
from tests.servers import wait_until
from tests.store.conftest import Owner, buy, delivered_owner, item, offer
from tests.store.engine import engine_keys, signing
from tests.vehicles.support import CommittedDatabase, committed

__all__ = ["committed", "engine_keys", "signing"]

# How long a held transaction waits for the others before the test gives up (never reached
# when the code is right: the others lock or wait within milliseconds).
HOLD_TIMEOUT = 20.0

ANY_LOCK = re.compile(r"FOR UPDATE")
CAR_LOCK = re.compile(r"FROM vehicles\b.*FOR UPDATE", re.DOTALL)


@dataclass
class FirstLocks:
    """Holds each named transaction right after its first statement matching its pattern
    (a row lock) until each of the others holds its own, waits for a lock in PostgreSQL
    (`pg_blocking_pids`), or has finished."""

    db: CommittedDatabase
    parties: dict[str, re.Pattern[str]]
    pids: dict[str, int] = field(default_factory=dict)
    holding: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)
    errors: dict[str, BaseException] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _blocked(self, name: str) -> bool:
        pid = self.pids.get(name)
        if pid is None:
            return False
        with self.db.engine.connect() as monitor:
            return bool(
                monitor.scalar(text("SELECT cardinality(pg_blocking_pids(:p))"), {"p": pid})
            )

    def _others_ready(self, name: str) -> bool:
        with self._lock:
            others = [other for other in self.parties if other != name]
            waiting = [o for o in others if o not in self.holding and o not in self.finished]
        return all(self._blocked(other) for other in waiting)

    def _hold_after(self, name: str, connection: Connection) -> None:
        pattern = self.parties[name]
        held = False

        def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            nonlocal held
            if held or not pattern.search(statement):
                return
            held = True
            with self._lock:
                self.holding.add(name)
            wait_until(lambda: self._others_ready(name), timeout=HOLD_TIMEOUT)

        event.listen(connection, "after_cursor_execute", after)

    def run(self, name: str, work: Callable[[Session], Any], start: threading.Barrier) -> None:
        """`work` in its own transaction, committed; its error or result kept by name."""
        session = self.db.sessions()
        try:
            connection = session.connection()
            self.pids[name] = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            self._hold_after(name, connection)
            start.wait(timeout=HOLD_TIMEOUT)
            self.results[name] = work(session)
            session.commit()
        except BaseException as error:  # noqa: BLE001 - the test reports it
            session.rollback()
            self.errors[name] = error
        finally:
            with self._lock:
                self.finished.add(name)
            session.close()

    def all_at_once(self, works: dict[str, Callable[[Session], Any]]) -> None:
        start = threading.Barrier(len(works))
        threads = [
            threading.Thread(target=self.run, args=(name, work, start), name=f"lock-{name}")
            for name, work in works.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=HOLD_TIMEOUT * 2)
        assert not any(thread.is_alive() for thread in threads)


@dataclass(frozen=True)
class Delivering:
    """A car whose purchase waits for it to apply its version (committed)."""

    owner: Owner
    purchase_id: int
    version: int


def delivering(
    committed: CommittedDatabase, settings: Settings, clock: FixedClock, token: str
) -> Delivering:
    session = committed.sessions()
    try:
        owner = delivered_owner(session, settings, clock)
        window = offer(session, owner.vehicle, "power_boost", "window", "1D", deadline_seconds=60)
        purchase = buy(
            session,
            owner,
            [item(window)],
            token=token,
            key=f"lock-order-{owner.vehicle.vin}",
            settings=settings,
            clock=clock,
        )
        assert purchase.state == "delivering"
        assert purchase.configuration_version is not None
        return Delivering(owner, purchase.id, purchase.configuration_version)
    finally:
        session.close()


def applied(car: Delivering, clock: FixedClock) -> Callable[[Session], Any]:
    """The car's `applied` answer, as the MQTT bridge stores it."""
    report = Reported(
        vin=car.owner.vehicle.vin,
        version=car.version,
        status="applied",
        at=clock.now(),
        active_features=[],
    )
    return lambda session: ota.record_report(session, report, now=clock.now())


def deadline_job(car: Delivering, clock: FixedClock) -> Callable[[Session], Any]:
    """The `store.purchase_deadline` job, run once the deadline has passed."""
    late = clock.now() + timedelta(minutes=5)
    return lambda session: purchases.deadline_passed(session, car.purchase_id, now=late)


def settled_one_way(committed: CommittedDatabase, car: Delivering) -> str:
    """The purchase either went through (its option active, its capture queued) or was
    refunded (its option revoked): never both, never neither."""

    def read(session: Session) -> str:
        purchase = session.get_one(Purchase, car.purchase_id)
        states = set(
            session.scalars(
                select(Entitlement.state).where(Entitlement.purchase_id == car.purchase_id)
            )
        )
        captures = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.dedupe_key == f"{purchases.CAPTURE_TOPIC}:{car.purchase_id}")
        )
        if purchase.state == "refunded":
            assert states == {"revoked"} and not captures
        else:
            assert purchase.state == "delivering" and states == {"active"} and captures == 1
        return purchase.state

    return committed.run(read)


@pytest.mark.usefixtures("signing")
def test_an_applied_answer_and_the_deadline_job_for_one_car_both_go_through(
    committed: CommittedDatabase, settings: Settings, payment_sandbox: PaymentSandbox
) -> None:
    clock = FixedClock()
    car = delivering(committed, settings, clock, payment_sandbox.token(CARD_SUCCEEDS))
    locks = FirstLocks(committed, {"report": ANY_LOCK, "deadline": ANY_LOCK})

    locks.all_at_once({"report": applied(car, clock), "deadline": deadline_job(car, clock)})

    assert locks.errors == {}
    assert settled_one_way(committed, car) in ("delivering", "refunded")


@pytest.mark.usefixtures("signing")
def test_a_purchase_the_cars_answer_and_the_deadline_job_at_once_all_go_through(
    committed: CommittedDatabase, settings: Settings, payment_sandbox: PaymentSandbox
) -> None:
    """The soak's failed purchase (a 500): its delivery held the car's row and waited for the
    version the car's answer held, which waited for the purchase the deadline job held, which
    waited for the car's row."""
    clock = FixedClock()
    car = delivering(committed, settings, clock, payment_sandbox.token(CARD_SUCCEEDS))
    session = committed.sessions()
    try:
        second = offer(session, car.owner.vehicle, "winter_traction", "window", "1M")
        begun = purchases.begin_purchase(
            session,
            user=car.owner.user,
            vin=car.owner.vehicle.vin,
            items=[item(second)],
            payment_method=payment_sandbox.token(CARD_SUCCEEDS),
            idempotency_key=f"lock-order-second-{car.owner.vehicle.vin}",
            now=clock.now(),
        )
        session.commit()
        second_id = begun.id
    finally:
        session.close()

    def deliver_second(session: Session) -> str:
        with SandboxProvider.from_settings(settings) as provider:
            purchase = purchases.drive_purchase(
                session,
                session.get_one(Purchase, second_id),
                provider=provider,
                actor=car.owner.actor(),
                now=clock.now(),
            )
        return purchase.state

    locks = FirstLocks(committed, {"purchase": CAR_LOCK, "report": ANY_LOCK, "deadline": ANY_LOCK})
    locks.all_at_once(
        {
            "purchase": deliver_second,
            "report": applied(car, clock),
            "deadline": deadline_job(car, clock),
        }
    )

    assert locks.errors == {}
    assert locks.results["purchase"] == "delivering"
    settled_one_way(committed, car)
    # The second purchase's version is the car's newest, waiting for it.
    newest = committed.run(
        lambda s: s.scalars(
            select(ConfigurationVersion)
            .where(ConfigurationVersion.vehicle_id == car.owner.vehicle.id)
            .order_by(ConfigurationVersion.version.desc())
        ).first()
    )
    assert newest is not None and newest.state == "pending"
