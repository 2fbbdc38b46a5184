"""Live pages: server-sent events that push a purchase's activation status, a car's state,
an order's progress and the configuration pushes' counts to the open page
(`static/live-status.js`, `static/store.js`, `static/pushes.js`).

A stream reads the status, sends it, then waits on PostgreSQL `LISTEN` and reads again only when
a notification concerns it, sending only what changed. Two channels wake it: the outbox's
`NOTIFY caas_outbox` (its payload is the queued message's topic; each stream names the topics
that can change what it shows) and `NOTIFY caas_live` (`caas.core.live.announce`: `vehicle:12`
when a car answered or got its manifest, `push:3` for its push, `sale:7` when an order or one of
its payments moved). Both arrive at the commit of the change. A slow safety re-read every
`RECHECK_SECONDS` catches a change that told nobody; a stream that cannot listen (the sessions
share one connection, in tests, or the database refused) re-reads every `POLL_SECONDS` instead.
A comment line every `HEARTBEAT_SECONDS` keeps proxies from closing a quiet stream; the stream
ends once the status is final, or after `LIFETIME_SECONDS` (the browser reconnects).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.deps import CustomerUser
from caas.accounts.models import User
from caas.core.api import DbSession
from caas.core.db import listen_url
from caas.core.live import LIVE_CHANNEL
from caas.core.outbox import NOTIFY_CHANNEL
from caas.vehicles import twin
from caas.web import portal, store

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/portal", include_in_schema=False)

RECHECK_SECONDS = 30.0
POLL_SECONDS = 2.0
HEARTBEAT_SECONDS = 15.0
# Notifications that come in a burst (a wave's cars answering) cause one read per this long.
SETTLE_SECONDS = 0.2
LIFETIME_SECONDS = 600.0
RETRY_MS = 3000


class CarLiveStatus(BaseModel):
    """What the car's page shows that the car or the platform can change while it is open."""

    vin: str
    state: str = Field(description="`in_service`, or `archived` once scrapped")
    online: bool
    software_version: str
    desired_version: int | None = Field(description="The newest configuration")
    applied_version: int | None = Field(description="The configuration the car runs")
    pending_version: int | None = Field(description="A configuration not yet in force")
    waiting_for: str | None = Field(description="`car` (not answered) or `park`")
    active_features: list[str] = Field(description="On in the car by its last report")
    final: bool = Field(description="The car will not change any more (scrapped)")


def car_status(session: Session, user: User, vin: str) -> CarLiveStatus:
    """The owner's car as the live stream sends it; anyone else gets a 404."""
    vehicle = twin.visible_vehicle(session, user, vin)
    shown = twin.twin_of(session, vehicle, since=twin.shown_since(user, vehicle))
    return CarLiveStatus(
        vin=shown.vin,
        state=shown.state,
        online=shown.connection.online,
        software_version=shown.software_version,
        desired_version=shown.desired.version if shown.desired else None,
        applied_version=shown.reported.version if shown.reported else None,
        pending_version=shown.pending.version if shown.pending else None,
        waiting_for=shown.pending.waiting_for if shown.pending else None,
        active_features=sorted(shown.reported.active_features) if shown.reported else [],
        final=shown.state == "archived",
    )


@router.get("/cars/{vin}/live")
def car_live_status(vin: str, session: DbSession, user: CustomerUser) -> CarLiveStatus:
    """The car's state once, as JSON: what the page polls where it cannot keep a stream."""
    return car_status(session, user, vin)


@router.get("/cars/{vin}/events")
def car_events(
    request: Request, vin: str, session: DbSession, user: CustomerUser
) -> StreamingResponse:
    vehicle = twin.visible_vehicle(session, user, vin)  # only the owner: 404 before any stream

    def read(reading: Session) -> BaseModel:
        return car_status(reading, reading.get_one(User, user.id), vin)

    return stream(request, read, Wake(CAR_TOPICS, frozenset({f"vehicle:{vehicle.id}"})))


@router.get("/orders/{sale_id}/events")
def order_events(
    request: Request, sale_id: int, session: DbSession, user: CustomerUser
) -> StreamingResponse:
    portal.live_status(request, sale_id, session, user)  # the buyer only: else 404

    def read(reading: Session) -> BaseModel:
        return portal.live_status(request, sale_id, reading, reading.get_one(User, user.id))

    return stream(request, read, Wake(ORDER_TOPICS, frozenset({f"sale:{sale_id}"})))


@router.get("/cars/{vin}/purchases/{purchase_id}/events")
def purchase_events(
    request: Request, vin: str, purchase_id: int, session: DbSession, user: CustomerUser
) -> StreamingResponse:
    store.purchase_status(request, vin, purchase_id, session, user)  # the buyer only: else 404
    vehicle = twin.visible_vehicle(session, user, vin)

    def read(reading: Session) -> BaseModel:
        buyer = reading.get_one(User, user.id)
        return store.purchase_status(request, vin, purchase_id, reading, buyer)

    return stream(request, read, Wake(PURCHASE_TOPICS, frozenset({f"vehicle:{vehicle.id}"})))


# The outbox topics (by prefix) whose messages can change what each stream shows, beyond the
# stream's own `caas_live` subjects. Kept narrow: a topic every car's change queues (e-mails)
# would wake every open page at each of them. A car's new version queues `ota.publish`; an
# order's steps and payments announce `sale:ID`, their factory and registry work is queued;
# a purchase's capture (the step to "active") is a `store.` job that tells the buyer by e-mail.
CAR_TOPICS: Final = ("ota.",)
ORDER_TOPICS: Final = ("factory.", "registration.")
PURCHASE_TOPICS: Final = ("store.", "ota.", "billing.", "email.")


@dataclass(frozen=True)
class Wake:
    """Which notifications wake a stream: outbox messages whose topic starts with one of
    `topics`, and `caas_live` announcements of one of `subjects` (or starting with
    `subject_prefix`). A notification without a payload wakes every stream."""

    topics: tuple[str, ...] = ()
    subjects: frozenset[str] = frozenset()
    subject_prefix: str | None = None
    # At most one read per this long while notifications keep coming.
    settle: float = SETTLE_SECONDS

    def __call__(self, channel: str, payload: str) -> bool:
        if not payload:
            return True
        if channel == LIVE_CHANNEL:
            prefix = self.subject_prefix
            return payload in self.subjects or (prefix is not None and payload.startswith(prefix))
        return payload.startswith(self.topics)


def stream(request: Request, read: Callable[[Session], BaseModel], wake: Wake) -> StreamingResponse:
    """An SSE response sending `read`'s status each time it changes (see the module's text)."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    return StreamingResponse(
        _events(sessions, read, wake),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _read_once(sessions: sessionmaker[Session], read: Callable[[Session], BaseModel]) -> str:
    with sessions() as session:
        return read(session).model_dump_json()


async def _events(
    sessions: sessionmaker[Session], read: Callable[[Session], BaseModel], wake: Wake
) -> AsyncIterator[str]:
    listener = await _listen(sessions)
    every = RECHECK_SECONDS if listener is not None else POLL_SECONDS
    try:
        yield f"retry: {RETRY_MS}\n\n"
        sent = ""
        started = spoke_at = time.monotonic()
        end = started + LIFETIME_SECONDS
        while True:
            read_at = time.monotonic()
            status = await run_in_threadpool(_read_once, sessions, read)
            if status != sent:
                sent = status
                spoke_at = time.monotonic()
                yield f"event: status\ndata: {status}\n\n"
                if json.loads(status).get("final"):
                    yield "event: end\ndata: {}\n\n"
                    return
            # Wait for a notification of ours, the safety re-read or the end; speak meanwhile.
            while True:
                now = time.monotonic()
                if now >= end:
                    return
                if now - spoke_at >= HEARTBEAT_SECONDS:
                    spoke_at = now
                    yield ": heartbeat\n\n"
                until = min(read_at + every, spoke_at + HEARTBEAT_SECONDS, end)
                if now >= read_at + every or await _wait(listener, wake, until - now):
                    break
            await asyncio.sleep(max(0.0, read_at + wake.settle - time.monotonic()))
    finally:
        if listener is not None:
            await listener.close()


async def _listen(sessions: sessionmaker[Session]) -> psycopg.AsyncConnection[Any] | None:
    """A connection of its own listening to the outbox's and the live pages' NOTIFY, at the
    sessions' LISTEN URL (`CAAS_DATABASE_LISTEN_URL`); None when the sessions are bound to one
    connection (tests), or the database refuses: then the stream polls."""
    url = listen_url(sessions)
    if url is None:
        return None
    try:
        connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        await connection.execute(f"LISTEN {LIVE_CHANNEL}")
    except psycopg.Error as error:
        log.warning("live.listen_failed", error=str(error))
        return None
    return connection


async def _wait(listener: psycopg.AsyncConnection[Any] | None, wake: Wake, timeout: float) -> bool:
    """Until a notification `wake` wants arrives (True) or `timeout` passes (False)."""
    if timeout <= 0:
        return False
    if listener is None:
        await asyncio.sleep(timeout)
        return False
    deadline = time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            async for notification in listener.notifies(timeout=remaining, stop_after=1):
                if wake(notification.channel, notification.payload):
                    return True
    except psycopg.Error as error:
        log.warning("live.listen_failed", error=str(error))
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    return False
