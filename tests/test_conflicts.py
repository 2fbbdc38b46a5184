"""A transaction PostgreSQL rolls back for colliding with another (a deadlock, a serialization
failure) is run again where that is safe, and never shows as a server error: the bridge stores
a car's report again, the API answers 503 `database.conflict` with `Retry-After`.

The conflicts are PostgreSQL's own errors (raised by the server with their SQLSTATE), so the
code under test sees exactly what a real deadlock gives it; `tests/store/test_lock_order.py`
shows the lock order that keeps real deadlocks from happening at all.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.db import CONFLICT_ATTEMPTS, lock_conflict, retry_on_conflict
from caas.core.settings import Settings
from caas.iot.bridge import Bridge, Sinks
from caas.iot.broker import BrokerAddress
from caas.protocol import mqtt
from caas.protocol.mqtt import Reported
from tests.servers import wait_until
from tests.vehicles.support import CommittedDatabase, committed

__all__ = ["committed"]


def _raise(session: Session, sqlstate: str) -> None:
    """Have the server fail the statement with this SQLSTATE, as its deadlock detector does."""
    session.execute(
        text(f"DO $$ BEGIN RAISE EXCEPTION 'probe' USING ERRCODE = '{sqlstate}'; END $$")
    )


@pytest.fixture
def probe_table(committed: CommittedDatabase) -> Iterator[str]:
    """A table of this test's own, to see which attempts' writes were kept."""
    name = f"conflict_probe_{secrets.token_hex(4)}"
    committed.run(lambda s: s.execute(text(f"CREATE TABLE {name} (attempt int)")))
    yield name
    committed.run(lambda s: s.execute(text(f"DROP TABLE {name}")))


def _kept(committed: CommittedDatabase, table: str) -> list[int]:
    return committed.run(
        lambda s: list(s.scalars(text(f"SELECT attempt FROM {table} ORDER BY attempt")))
    )


def test_a_deadlocked_transaction_runs_again_and_only_its_last_attempt_is_kept(
    committed: CommittedDatabase, probe_table: str
) -> None:
    attempts: list[int] = []

    def work(session: Session) -> str:
        attempts.append(len(attempts) + 1)
        session.execute(text(f"INSERT INTO {probe_table} VALUES (:a)"), {"a": attempts[-1]})
        if len(attempts) == 1:
            _raise(session, "40P01")  # deadlock_detected
        if len(attempts) == 2:
            _raise(session, "40001")  # serialization_failure
        return "stored"

    assert retry_on_conflict(committed.sessions, work) == "stored"
    assert attempts == [1, 2, 3]
    assert _kept(committed, probe_table) == [3]


def test_a_transaction_that_keeps_colliding_gives_up_and_other_errors_are_not_retried(
    committed: CommittedDatabase,
) -> None:
    tries: list[str] = []

    def always_deadlocks(session: Session) -> None:
        tries.append("deadlock")
        _raise(session, "40P01")

    with pytest.raises(DBAPIError) as raised:
        retry_on_conflict(committed.sessions, always_deadlocks)
    assert lock_conflict(raised.value)
    assert len(tries) == CONFLICT_ATTEMPTS

    def divides_by_zero(session: Session) -> None:
        tries.append("bug")
        session.execute(text("SELECT 1 / 0"))

    with pytest.raises(DBAPIError) as raised:
        retry_on_conflict(committed.sessions, divides_by_zero)
    assert not lock_conflict(raised.value)
    assert tries.count("bug") == 1


def test_the_bridge_stores_a_report_again_when_its_transaction_deadlocked(
    committed: CommittedDatabase, probe_table: str
) -> None:
    """Before, the report was dropped (`mqtt.store_failed`) and the car's purchase waited for
    the platform's re-send, 30 s later."""
    tries: list[int] = []

    def report(session: Session, reported: Reported, _: datetime) -> None:
        tries.append(reported.version)
        session.execute(text(f"INSERT INTO {probe_table} VALUES (:v)"), {"v": reported.version})
        if len(tries) == 1:
            _raise(session, "40P01")

    sinks = Sinks(
        report=report,
        telemetry=lambda *_: 0,
        events=lambda *_: 0,
        status=lambda *_: None,
    )
    # Never started: the test hands it the message as its network loop would.
    bridge = Bridge(BrokerAddress("127.0.0.1", 1), committed.sessions, FixedClock(), sinks=sinks)
    vin = "WCAAS000500000042"
    answer = Reported(vin=vin, version=7, status="applied", at=datetime(2026, 1, 15, tzinfo=UTC))
    try:
        bridge.dispatch(mqtt.reported_topic(vin), mqtt.encode(answer))
        wait_until(lambda: bridge.counts["stored.report"] or bridge.counts["failed.report"])
    finally:
        bridge.stop()
    assert bridge.counts["stored.report"] == 1
    assert bridge.counts["failed.report"] == 0
    assert tries == [7, 7]
    assert _kept(committed, probe_table) == [7]


def test_a_request_that_deadlocked_answers_503_conflict_with_retry_after(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    app = create_app(settings=settings, sessions=sessions, clock=FixedClock())

    @app.post("/probe/conflict")
    def collide() -> None:
        with sessions() as session:
            _raise(session, "40P01")

    with TestClient(app) as client:
        response = client.post("/probe/conflict")
    assert response.status_code == 503
    assert response.json()["code"] == "database.conflict"
    assert response.headers["Retry-After"] == "1"
