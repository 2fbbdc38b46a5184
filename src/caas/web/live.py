"""Live pages: server-sent events that push a purchase's activation status, a car's state and
an order's progress to the customer's open page (`static/live-status.js`, `static/store.js`).

A stream reads the status, sends it, then waits on PostgreSQL `LISTEN` for the outbox's
`NOTIFY` (every purchase step and every answer of a car queues a job or a message, and the
notification arrives at that transaction's commit) and reads again, sending only what changed;
at most `RECHECK_SECONDS` pass between two reads, so a change that queued nothing still shows.
A comment line every `HEARTBEAT_SECONDS` keeps proxies from closing a quiet stream; the stream
ends once the status is final, or after `LIFETIME_SECONDS` (the browser reconnects).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.deps import CustomerUser
from caas.accounts.models import User
from caas.core.api import DbSession
from caas.core.outbox import NOTIFY_CHANNEL
from caas.vehicles import twin
from caas.web import portal, store

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/portal", include_in_schema=False)

RECHECK_SECONDS = 2.0
HEARTBEAT_SECONDS = 15.0
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
    car_status(session, user, vin)  # only the owner may listen: 404 before any stream

    def read(reading: Session) -> BaseModel:
        return car_status(reading, reading.get_one(User, user.id), vin)

    return _stream(request, read)


@router.get("/orders/{sale_id}/events")
def order_events(
    request: Request, sale_id: int, session: DbSession, user: CustomerUser
) -> StreamingResponse:
    portal.live_status(request, sale_id, session, user)  # the buyer only: else 404

    def read(reading: Session) -> BaseModel:
        return portal.live_status(request, sale_id, reading, reading.get_one(User, user.id))

    return _stream(request, read)


@router.get("/cars/{vin}/purchases/{purchase_id}/events")
def purchase_events(
    request: Request, vin: str, purchase_id: int, session: DbSession, user: CustomerUser
) -> StreamingResponse:
    store.purchase_status(request, vin, purchase_id, session, user)  # the buyer only: else 404

    def read(reading: Session) -> BaseModel:
        buyer = reading.get_one(User, user.id)
        return store.purchase_status(request, vin, purchase_id, reading, buyer)

    return _stream(request, read)


def _stream(request: Request, read: Callable[[Session], BaseModel]) -> StreamingResponse:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return StreamingResponse(
        _events(sessions, read),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _read_once(sessions: sessionmaker[Session], read: Callable[[Session], BaseModel]) -> str:
    with sessions() as session:
        return read(session).model_dump_json()


async def _events(
    sessions: sessionmaker[Session], read: Callable[[Session], BaseModel]
) -> AsyncIterator[str]:
    listener = await _listen(sessions)
    try:
        yield f"retry: {RETRY_MS}\n\n"
        sent = ""
        started = quiet_since = time.monotonic()
        while time.monotonic() - started < LIFETIME_SECONDS:
            status = await run_in_threadpool(_read_once, sessions, read)
            if status != sent:
                sent = status
                quiet_since = time.monotonic()
                yield f"event: status\ndata: {status}\n\n"
                if json.loads(status).get("final"):
                    yield "event: end\ndata: {}\n\n"
                    return
            elif time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                quiet_since = time.monotonic()
                yield ": heartbeat\n\n"
            await _wait(listener, RECHECK_SECONDS)
    finally:
        if listener is not None:
            await listener.close()


async def _listen(sessions: sessionmaker[Session]) -> psycopg.AsyncConnection[Any] | None:
    """A connection of its own listening to the outbox's NOTIFY; None when the sessions are
    bound to one connection (tests), or the database refuses: then the stream only rechecks."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, Engine):
        return None
    url = bind.url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
    except psycopg.Error as error:
        log.warning("live.listen_failed", error=str(error))
        return None
    return connection


async def _wait(listener: psycopg.AsyncConnection[Any] | None, timeout: float) -> None:
    """Until a notification arrives (then a moment for its siblings) or `timeout` passes."""
    if listener is None:
        await asyncio.sleep(timeout)
        return
    try:
        async for _ in listener.notifies(timeout=timeout, stop_after=1):
            break
    except psycopg.Error as error:
        log.warning("live.listen_failed", error=str(error))
        await asyncio.sleep(timeout)
