"""What the store's self-rescheduling jobs share: a position row and numbered runs.

A chain (the window sweep, the reminders, the metered caps) keeps its position in a
`SweepCursor` row, locked while a run works and moved in the same transaction; run N of the
chain is one outbox message with the dedupe key `{topic}:N`, so queuing the next run twice
queues it once and a stray message of an older run finds itself stale.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from caas.core.outbox import enqueue
from caas.store.models import SweepCursor


def locked_cursor(session: Session, name: str, *, start: datetime) -> SweepCursor:
    """The chain's position row, created at `start` the first time, locked until the commit."""
    session.execute(
        insert(SweepCursor)
        .values(name=name, swept_until=start, runs=0)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return session.scalars(
        select(SweepCursor)
        .where(SweepCursor.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def started(session: Session, name: str) -> bool:
    """Whether the chain has begun (its position row exists)."""
    return session.scalar(select(SweepCursor.runs).where(SweepCursor.name == name)) is not None


def queue_run(session: Session, topic: str, run: int, *, at: datetime, now: datetime) -> None:
    """Queue run number `run` of the chain at `at` (once, whoever asks)."""
    enqueue(
        session,
        topic=topic,
        payload={"run": run},
        dedupe_key=f"{topic}:{run}",
        now=now,
        run_after=at,
    )
