"""The database settings for running many processes on one PostgreSQL: each process's pool
(`CAAS_DATABASE_POOL_SIZE`, `CAAS_DATABASE_MAX_OVERFLOW`) and where the LISTEN connections go
(`CAAS_DATABASE_LISTEN_URL`: PostgreSQL itself, past a PgBouncer in transaction mode)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy.orm import Session

from caas.core.clock import SystemClock
from caas.core.db import make_engine, make_session_factory
from caas.core.live import announce
from caas.core.outbox import OutboxListener, OutboxMessage, Relay, enqueue
from caas.core.settings import Settings
from caas.runtime import Runtime, StartupError, read_settings
from caas.web import live
from caas.worker import Worker, build_worker
from tests.vehicles.support import CommittedDatabase, committed, wait_until

__all__ = ["committed"]

TOPIC = "test.listen_url"


def _named(url: str, application_name: str) -> str:
    """`url` whose connections show as `application_name` in pg_stat_activity."""
    return f"{url}{'&' if '?' in url else '?'}application_name={application_name}"


def _listening(database: CommittedDatabase, application_name: str) -> int:
    """How many connections named `application_name` wait in LISTEN."""
    with psycopg.connect(database.url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND query ILIKE 'LISTEN%%'",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def listen_name() -> str:
    return f"caas-listen-{uuid.uuid4().hex[:8]}"


# --- pool sizes ---------------------------------------------------------------------------


def test_the_pool_of_caas_api_and_caas_worker_has_the_configured_size(
    committed: CommittedDatabase,
) -> None:
    settings = Settings(
        env="test", database_url=committed.url, database_pool_size=3, database_max_overflow=1
    )
    runtime = Runtime.connect(settings)  # what `caas api` and `caas worker` start with
    try:
        pool = runtime.engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._max_overflow == 1  # type: ignore[attr-defined]
    finally:
        runtime.close()


def test_without_settings_the_pool_keeps_ten_and_opens_twenty_more() -> None:
    settings = Settings(env="test")
    assert (settings.database_pool_size, settings.database_max_overflow) == (10, 20)


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("CAAS_DATABASE_POOL_SIZE", "0", "greater than or equal to 1"),
        ("CAAS_DATABASE_POOL_SIZE", "many", "valid integer"),
        ("CAAS_DATABASE_MAX_OVERFLOW", "-1", "greater than or equal to 0"),
    ],
)
def test_a_bad_pool_size_stops_the_process_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(StartupError, match=f"{variable}: .*{reason}"):
        read_settings()


# --- the LISTEN URL -----------------------------------------------------------------------


def test_an_unreachable_listen_url_stops_the_process(committed: CommittedDatabase) -> None:
    settings = Settings(
        env="test",
        database_url=committed.url,
        database_listen_url="postgresql://nobody@127.0.0.1:1/caas",
    )
    with pytest.raises(StartupError, match="cannot reach the database"):
        Runtime.connect(settings)


def test_the_outbox_listener_listens_at_the_listen_url_and_hears_a_commit_on_the_pool(
    committed: CommittedDatabase, listen_name: str
) -> None:
    sessions = make_session_factory(committed.engine, listen_url=_named(committed.url, listen_name))
    listener = OutboxListener.for_sessions(sessions)
    assert listener is not None
    try:
        assert listener.listen()
        assert _listening(committed, listen_name) == 1
        assert not listener.wait(0)
        with sessions.begin() as session:  # the pool's connection, not the listener's
            _queue(session, 0)
        assert listener.wait(5)
    finally:
        listener.close()
        committed.run(_forget_test_messages)


@pytest.fixture
def worker_on_listen_url(
    committed: CommittedDatabase, listen_name: str
) -> Iterator[tuple[Worker, list[int]]]:
    """A worker with the listen URL `caas worker` gets from its settings, delivering a test
    topic; it would look at the outbox by itself only after a minute."""
    settings = Settings(
        env="test",
        database_url=committed.url,
        database_listen_url=_named(committed.url, listen_name),
    )
    # The sessions as `caas worker` makes them from its settings (`Runtime.connect`).
    sessions = make_session_factory(committed.engine, listen_url=settings.database_listen_url)
    built = build_worker(settings, sessions, SystemClock())
    delivered: list[int] = []
    done = threading.Event()

    def handle(session: Session, payload: dict[str, Any]) -> None:
        delivered.append(int(str(payload["n"])))
        done.set()

    relay = Relay(sessions=committed.sessions, clock=SystemClock(), handlers={TOPIC: handle})
    worker = Worker(relay, idle_seconds=60, listener_url=built.listener_url)
    thread = threading.Thread(target=lambda: _deliver(worker), daemon=True)
    thread.start()
    yield worker, delivered
    worker._stop.set()
    thread.join(10)
    committed.run(_forget_test_messages)


def _deliver(worker: Worker) -> None:
    worker._deliver(worker.relay)


def test_the_worker_listens_at_the_listen_url_and_is_woken_by_a_commit(
    committed: CommittedDatabase,
    listen_name: str,
    worker_on_listen_url: tuple[Worker, list[int]],
) -> None:
    _, delivered = worker_on_listen_url
    wait_until(lambda: _listening(committed, listen_name) == 1, what="the worker's LISTEN")
    committed.run(lambda session: _queue(session, 1))
    wait_until(lambda: delivered == [1], timeout=10, what="the message delivered")


def test_a_live_page_listens_at_the_listen_url_and_is_woken_by_an_announcement(
    committed: CommittedDatabase, listen_name: str
) -> None:
    sessions = make_session_factory(committed.engine, listen_url=_named(committed.url, listen_name))
    wake = live.Wake(subjects=frozenset({"vehicle:424242"}))

    async def page() -> bool:
        listener = await live._listen(sessions)
        assert listener is not None
        try:
            assert _listening(committed, listen_name) == 1
            committed.run(lambda session: announce(session, "vehicle:424242"))
            return await live._wait(listener, wake, 5)
        finally:
            await listener.close()

    assert asyncio.run(page())


def test_without_a_listen_url_the_listeners_use_the_pools_database(
    committed: CommittedDatabase, listen_name: str
) -> None:
    engine = make_engine(_named(committed.url, listen_name), pool_size=1, max_overflow=0)
    try:
        listener = OutboxListener.for_sessions(make_session_factory(engine))
        assert listener is not None
        assert listener.listen()
        assert _listening(committed, listen_name) == 1
        listener.close()
    finally:
        engine.dispose()


def _queue(session: Session, n: int) -> None:
    enqueue(
        session,
        topic=TOPIC,
        payload={"n": n},
        dedupe_key=f"{TOPIC}:{uuid.uuid4().hex}",
        now=datetime.now(UTC),
    )


def _forget_test_messages(session: Session) -> None:
    session.query(OutboxMessage).filter(OutboxMessage.topic == TOPIC).delete()
