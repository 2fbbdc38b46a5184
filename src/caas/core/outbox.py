"""The transactional outbox: work queued in the caller's transaction, run after commit.

A message (an email, an order for the factory, a registration request) is a row written in the
same transaction as the change that caused it, so a rolled-back change sends nothing and a
committed one is always delivered. Workers claim due rows with FOR UPDATE SKIP LOCKED, so any
number of them never take the same message, and a failed attempt is retried with backoff.

Queuing a message due now also sends `NOTIFY caas_outbox` with the message's topic in the same
transaction; PostgreSQL delivers it at commit, so an idle worker waiting in
`OutboxListener.wait` starts at once instead of at its next poll, and only the relays that
deliver that topic wake up.

A delivery is one transaction with as few round trips as the work allows (it sits between a
purchase and the car): the handler runs in the claiming transaction without a savepoint; when
it fails, that transaction is rolled back and the failure is recorded in a new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import structlog
from sqlalchemy import BigInteger, Index, String, Text, select, text, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from caas.core.clock import Clock
from caas.core.db import Base, listen_url

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "caas_outbox"
# For this transaction only: its commit returns without waiting for the disk.
ASYNCHRONOUS_COMMIT = text("SET LOCAL synchronous_commit TO off")


class OutboxMessage(Base):
    __tablename__ = "outbox"
    # In the relays' order (run_after, id): picking the next message walks the index and
    # stops at the first row it can lock, however many are due (a monthly run queues one per
    # car); on run_after alone every due row was read and sorted for each pick.
    __table_args__ = (
        Index("ix_outbox_due", "run_after", "id", postgresql_where="done_at IS NULL"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    topic: Mapped[str] = mapped_column(String(60))
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime]
    run_after: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime | None]
    gave_up_at: Mapped[datetime | None]


def enqueue(
    session: Session,
    *,
    topic: str,
    payload: dict[str, Any],
    dedupe_key: str,
    now: datetime,
    run_after: datetime | None = None,
) -> None:
    """Queue a message in the caller's transaction; the same dedupe key is queued only once."""
    statement = (
        insert(OutboxMessage)
        .values(
            topic=topic,
            dedupe_key=dedupe_key,
            payload=payload,
            created_at=now,
            run_after=run_after or now,
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    session.execute(statement)
    if run_after is None or run_after <= now:
        session.execute(
            text("SELECT pg_notify(:channel, :topic)"), {"channel": NOTIFY_CHANNEL, "topic": topic}
        )


def cancel(session: Session, *, dedupe_key: str, now: datetime) -> bool:
    """Drop a queued message that has become pointless (marked done without delivery), in the
    caller's transaction; whether one was waiting."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.dedupe_key == dedupe_key, OutboxMessage.done_at.is_(None))
        .values(done_at=now, last_error="cancelled")
    )
    return bool(getattr(result, "rowcount", 0))


class RetryLater(Exception):
    """Raised by a handler that wants another attempt (the other side is down)."""


Handler = Callable[[Session, dict[str, Any]], None]


@dataclass
class Relay:
    """Delivers due outbox messages to their handlers, one transaction per message.

    `durable=False` commits deliveries without waiting for the disk (`synchronous_commit`
    off): for handlers whose only lasting effect is that the message is done, since a delivery
    lost in a crash of the database is delivered again, as after any crash before the commit
    (at least once). Any later synchronous commit makes it durable too.
    """

    sessions: sessionmaker[Session]
    clock: Clock
    handlers: dict[str, Handler]
    max_attempts: int = 12
    base_delay: timedelta = timedelta(seconds=2)
    max_delay: timedelta = timedelta(minutes=10)
    durable: bool = True

    def backoff(self, attempts: int) -> timedelta:
        delay: timedelta = self.base_delay * (2 ** max(attempts - 1, 0))
        return min(delay, self.max_delay)

    def run_once(self, limit: int = 50) -> int:
        """Deliver up to `limit` due messages; return how many were handled (ok or failed)."""
        handled = 0
        while handled < limit and self._deliver_next():
            handled += 1
        return handled

    def _deliver_next(self) -> bool:
        session = self.sessions()
        try:
            if not self.durable:
                session.execute(ASYNCHRONOUS_COMMIT)
            now = self.clock.now()
            message = session.scalars(
                select(OutboxMessage)
                .where(
                    OutboxMessage.done_at.is_(None),
                    OutboxMessage.gave_up_at.is_(None),
                    OutboxMessage.run_after <= now,
                    OutboxMessage.topic.in_(self.handlers),
                )
                .order_by(OutboxMessage.run_after, OutboxMessage.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if message is None:
                session.rollback()
                return False
            handler = self.handlers[message.topic]
            message_id = message.id
            try:
                handler(session, message.payload)
            except Exception as error:  # noqa: BLE001 - every failure is retried or parked
                session.rollback()  # what the handler did goes; the failure is kept below
                self._record_failure(session, message_id, error, now)
            else:
                message.done_at = self.clock.now()
                message.attempts += 1
                log.info("outbox.delivered", topic=message.topic, id=message_id)
            session.commit()
            return True
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _record_failure(
        self, session: Session, message_id: int, error: Exception, now: datetime
    ) -> None:
        """Count the failed attempt in a new transaction; nothing when another relay claimed
        the message meanwhile (it will count its own attempt)."""
        message = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.done_at.is_(None))
            .with_for_update(skip_locked=True)
        ).first()
        if message is not None:
            self._failed(message, error, now)

    def _failed(self, message: OutboxMessage, error: Exception, now: datetime) -> None:
        message.attempts += 1
        message.last_error = f"{type(error).__name__}: {error}"[:2000]
        if message.attempts >= self.max_attempts and not isinstance(error, RetryLater):
            message.gave_up_at = now
            log.error("outbox.gave_up", topic=message.topic, id=message.id, error=str(error))
            return
        message.run_after = now + self.backoff(message.attempts)
        log.warning(
            "outbox.retry",
            topic=message.topic,
            id=message.id,
            attempts=message.attempts,
            error=message.last_error,
        )


class OutboxListener:
    """Waits on its own connection for `NOTIFY caas_outbox`, which `enqueue` sends at commit.

    With `topics`, only a message of one of them ends the wait (a notification without a topic
    always does). A notification that arrives while nobody waits is kept by the connection and
    ends the next wait at once, so none is missed; a broken connection is reopened at the next
    wait.
    """

    def __init__(self, url: str, *, topics: Iterable[str] | None = None) -> None:
        self.url = url
        self.topics = frozenset(topics) if topics is not None else None
        self._connection: psycopg.Connection[Any] | None = None

    @classmethod
    def for_sessions(cls, sessions: sessionmaker[Session]) -> OutboxListener | None:
        """A listener on the database of `sessions`, at their LISTEN URL (`caas.core.db.
        listen_url`); None when they are bound to a single connection (tests), whose
        transactions never commit."""
        url = listen_url(sessions)
        return cls(url) if url is not None else None

    def listen(self) -> bool:
        """Start listening (before looking at the outbox, so no commit falls in between).
        Whether it (re)connected just now: notifications sent meanwhile were lost, so the
        caller looks at the outbox again."""
        if self._connection is not None and not self._connection.closed:
            return False
        try:
            connection = psycopg.connect(self.url, autocommit=True)
            connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error as error:
            log.warning("outbox.listen_failed", error=str(error))
            return False
        self._connection = connection
        return True

    def wait(self, timeout: float) -> bool:
        """Up to `timeout` seconds for a notification; True when one came (or when listening
        had to start again, which may have missed some)."""
        if self.listen():
            return True
        if self._connection is None:
            time.sleep(timeout)  # the database is away: poll
            return False
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                for notification in self._connection.notifies(timeout=remaining, stop_after=1):
                    if self._wanted(notification.payload):
                        return True
        except psycopg.Error as error:
            log.warning("outbox.listen_failed", error=str(error))
            self.close()
        return False

    def _wanted(self, topic: str) -> bool:
        return self.topics is None or not topic or topic in self.topics

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def pending(session: Session, topic: str | None = None) -> list[OutboxMessage]:
    query = select(OutboxMessage).where(OutboxMessage.done_at.is_(None))
    if topic is not None:
        query = query.where(OutboxMessage.topic == topic)
    return list(session.scalars(query.order_by(OutboxMessage.id)))
