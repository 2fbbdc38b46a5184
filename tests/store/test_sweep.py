"""Window boundaries: the worker's sweep re-signs a car's configuration at every start and end
of a window, once, whatever the restarts and the number of workers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.db import unit_of_work
from caas.core.outbox import OutboxMessage, Relay, pending
from caas.core.settings import Settings
from caas.ota.service import PUBLISH_TOPIC
from caas.store import sweep
from caas.store.jobs import start_chains
from caas.store.models import SweepCursor
from caas.store.reminders import REMINDERS_TOPIC
from caas.vehicles.models import Vehicle
from caas.worker import build_handlers
from tests.store.engine import Delivered, delivered, engine_keys, give, signing, versions
from tests.vehicles.support import (
    WAIT,
    CommittedDatabase,
    born_car,
    committed,
    deliver,
    wait_until,
)

__all__ = ["committed", "delivered", "engine_keys", "signing"]

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def sweep_relay(settings: Settings, sessions: sessionmaker[Session], clock: FixedClock) -> Relay:
    """The worker's relay, limited to the sweep (publishing needs a broker, tested elsewhere)."""
    handlers = build_handlers(settings, clock)
    return Relay(sessions=sessions, clock=clock, handlers={"store.sweep": handlers["store.sweep"]})


def run_until_idle(relay: Relay) -> int:
    handled = 0
    while count := relay.run_once():
        handled += count
    return handled


def reasons(db: Session, delivered: Delivered) -> list[str]:
    db.expire_all()
    return [version.reason for version in versions(db, delivered.vehicle)]


def test_a_window_start_and_end_each_publish_a_new_manifest_version(
    db: Session,
    delivered: Delivered,
    clock: FixedClock,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    now = clock.now()
    boost = give(db, delivered, "power_boost", now + 2 * HOUR, now + 5 * HOUR, now=now)
    db.commit()
    relay = sweep_relay(settings, sessions, clock)
    assert run_until_idle(relay) == 1  # the first run: nothing has started or ended yet
    assert reasons(db, delivered) == ["car.born", "delivered"]

    clock.advance(2 * HOUR)
    assert run_until_idle(relay) == 1
    assert reasons(db, delivered) == ["car.born", "delivered", "window.start"]
    started = versions(db, delivered.vehicle)[-1]
    enabled = [f["code"] for f in started.body["features"] if f["enabled"]]
    assert enabled == ["driver_assist", "power_boost"]
    queued = [m.payload for m in pending(db, PUBLISH_TOPIC)]
    assert {"version_id": started.id} in queued

    clock.advance(3 * HOUR)
    run_until_idle(relay)
    assert reasons(db, delivered)[-1] == "window.end"
    ended = versions(db, delivered.vehicle)[-1]
    assert [f["code"] for f in ended.body["features"] if f["enabled"]] == ["driver_assist"]
    db.refresh(boost)
    assert boost.state == "ended"


def test_the_next_run_waits_for_the_next_boundary_or_a_minute(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    give(db, delivered, "power_boost", now + 20 * timedelta(seconds=1), now + HOUR, now=now)
    done = sweep.run_sweep(db, run=0, now=now)
    assert done is not None
    assert done.next_run == now + timedelta(seconds=20)
    # Run 0's own message (queued by the grant) is still there: this test calls it by hand.
    (queued,) = [m for m in pending(db, "store.sweep") if m.payload != {"run": 0}]
    assert (queued.payload, queued.dedupe_key) == ({"run": 1}, "store.sweep:1")
    assert queued.run_after == now + timedelta(seconds=20)
    later = sweep.run_sweep(db, run=1, now=now + timedelta(seconds=20))
    assert later is not None
    assert later.next_run == now + timedelta(seconds=80)  # the end is an hour away


def test_nothing_repeats_after_a_restart_or_with_a_second_worker(
    db: Session,
    delivered: Delivered,
    clock: FixedClock,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    now = clock.now()
    give(db, delivered, "power_boost", now + HOUR, now + 3 * HOUR, now=now)
    db.commit()
    run_until_idle(sweep_relay(settings, sessions, clock))
    clock.advance(HOUR)
    run_until_idle(sweep_relay(settings, sessions, clock))
    assert reasons(db, delivered)[-1] == "window.start"
    signed = len(versions(db, delivered.vehicle))

    # A restarted worker, a second one, and someone starting the sweep again.
    sweep.start_sweeping(db, now=clock.now())
    db.commit()
    assert run_until_idle(sweep_relay(settings, sessions, clock)) == 0
    assert run_until_idle(sweep_relay(settings, sessions, clock)) == 0
    # A stray message of a run already done does nothing and queues nothing.
    assert sweep.run_sweep(db, run=0, now=clock.now()) is None
    db.commit()
    assert len(versions(db, delivered.vehicle)) == signed
    (chain,) = pending(db, "store.sweep")
    cursor = db.get_one(SweepCursor, sweep.CURSOR)
    assert chain.payload == {"run": cursor.runs}


def test_a_boundary_already_re_signed_by_whoever_changed_it_is_skipped(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    # The delivery granted the plan and signed at the same instant: no extra version.
    done = sweep.run_sweep(db, run=0, now=clock.advance(HOUR))
    assert done is not None
    assert (done.cars, done.boundaries, done.signed) == (1, 1, 0)
    assert reasons(db, delivered) == ["car.born", "delivered"]


def test_a_switched_off_option_ends_without_a_new_version(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    boost = give(db, delivered, "power_boost", now - HOUR, now + HOUR, now=now - HOUR)
    boost.enabled = False
    sweep.run_sweep(db, run=0, now=now)
    done = sweep.run_sweep(db, run=1, now=now + 2 * HOUR)
    assert done is not None
    assert (done.ended, done.signed) == (1, 0)
    assert boost.state == "ended"


def test_a_pass_is_cut_in_batches_and_a_crashed_batch_is_redone_whole(
    db: Session, clock: FixedClock, settings: Settings, signing: object
) -> None:
    now = clock.now()
    cars = []
    for _ in range(3):
        car = born_car(db, settings=settings, now=now)
        deliver(db, car, now=now)
        cars.append(car)
    # Every car's plan ends in the same instant, four years on.
    clock.advance(timedelta(days=4 * 366))
    later = clock.now()
    cursor = sweep._cursor(db)
    cursor.swept_until = later - timedelta(days=10)

    with db.begin_nested() as crashed:
        first = sweep.sweep_batch(db, sweep._cursor(db), now=later, batch=2)
        assert (first.cars, first.finished, first.next_run) == (2, False, later)
        crashed.rollback()
    db.expire_all()
    assert db.get_one(SweepCursor, sweep.CURSOR).pass_until is None

    first = sweep.sweep_batch(db, sweep._cursor(db), now=later, batch=2)
    second = sweep.sweep_batch(db, sweep._cursor(db), now=later, batch=2)
    assert (first.cars, first.finished, second.cars, second.finished) == (2, False, 1, True)
    assert first.ended + second.ended == 3
    assert first.signed + second.signed == 3
    cursor = db.get_one(SweepCursor, sweep.CURSOR)
    assert (cursor.swept_until, cursor.pass_until, cursor.after_vehicle_id) == (later, None, None)
    ends = db.scalars(
        select(OutboxMessage.payload).where(OutboxMessage.topic == PUBLISH_TOPIC)
    ).all()
    assert len(ends) >= 3
    third = sweep.sweep_batch(db, sweep._cursor(db), now=later, batch=2)
    assert (third.cars, third.signed) == (0, 0)


def test_two_workers_running_the_same_run_sign_the_boundary_once(
    committed: CommittedDatabase, settings: Settings, signing: object
) -> None:
    """Real transactions: the first worker holds the cursor's lock until it commits; the second
    waits for it, then finds its run done and does nothing."""
    now = datetime.now(UTC)
    car = committed.run(lambda session: born_car(session, settings=settings, now=now))
    committed.run(lambda session: deliver(session, car, now=now))

    def window(session: Session) -> None:
        delivered = Delivered(car, session.get_one(Vehicle, car.vehicle_id))
        give(session, delivered, "power_boost", now + MINUTE, now + HOUR, now=now)

    def settle(session: Session) -> bool:
        """Finish whatever pass other tests' workers left in this shared database."""
        return sweep.sweep_batch(session, sweep._cursor(session), now=now).finished

    while not committed.run(settle):
        pass
    committed.run(window)
    run = committed.run(lambda session: sweep._cursor(session).runs)
    results: dict[str, sweep.SweepBatch | None] = {}
    first_holds_the_lock = threading.Event()
    first_may_commit = threading.Event()

    def worker(name: str) -> None:
        with unit_of_work(committed.sessions) as session:
            if name == "second":
                first_holds_the_lock.wait(WAIT)
            results[name] = sweep.run_sweep(session, run=run, now=now + 2 * MINUTE)
            if name == "first":
                first_holds_the_lock.set()
                first_may_commit.wait(WAIT)

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    wait_until(lambda: _waiting_for_a_lock(committed), what="the second worker to wait")
    first_may_commit.set()
    for thread in threads:
        thread.join(WAIT)

    assert results["first"] is not None and results["second"] is None
    reasons = committed.run(
        lambda session: [
            v.reason for v in versions(session, session.get_one(Vehicle, car.vehicle_id))
        ]
    )
    assert reasons.count("window.start") == 1


def _waiting_for_a_lock(database: CommittedDatabase) -> bool:
    waiting = database.run(
        lambda session: session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    )
    return bool(waiting)


def test_a_starting_worker_queues_the_window_sweep_and_the_reminders_once(
    sessions: sessionmaker[Session], db: Session, clock: FixedClock
) -> None:
    start_chains(sessions, clock)
    start_chains(sessions, clock)  # a second worker, or a restart
    db.expire_all()
    assert len(pending(db, sweep.SWEEP_TOPIC)) == 1
    assert len(pending(db, REMINDERS_TOPIC)) == 1
