"""The worker's MQTT connection: configurations out to the cars, everything the cars send in.

One aiomqtt client with the platform's service account (`CAAS_MQTT_URL`) runs on its own
asyncio loop in a thread of the worker:

- **out**: `publish_desired` (called by the relay's `ota.publish` handler, from its thread)
  publishes a signed manifest on the car's desired topic, retained with QoS 1, and returns when
  the broker has acknowledged it;
- **in**: the cars' reports, telemetry and usage events through shared subscriptions
  (`$share/caas/...`), so worker replicas split the stream, and their status directly (a shared
  subscription gets no retained messages, and the platform wants every car's last status when
  it connects); the steps of software updates on the events topic go to `caas.releases` in
  the order they came, with status. Reports go to the database at once
  (`caas.ota.service.record_report`): a car waits for nothing else. Telemetry, events and
  statuses are stored in batches (statuses before a software step that follows them), so a
  thousand cars coming back at once after a broker restart cost a few transactions, not a
  thousand one after the other ahead of every telemetry batch.

The database is never touched on the loop's thread: the relay may hold a version's row while
it waits here for the broker's acknowledgement, and the report of that very version must not
block the loop meanwhile. A report is taken from the incoming queue before any telemetry, so a
car flooding telemetry does not slow other cars' configuration; telemetry beyond
`telemetry_per_second` per car is dropped (QoS 0: the next sample replaces it). A malformed
message is dropped and counted (`counts`), never raised. Sockets have TCP_NODELAY: Nagle's
algorithm would add up to 40 ms to every acknowledgement.

The client acknowledges a message to the broker when it arrives, before it is stored: a report
lost in a crash is recovered by the platform's re-send (the car answers again), never by the
car. So reports and telemetry (QoS 0, replaced by the next sample) are committed without
waiting for the disk (`synchronous_commit` off, in their transaction only), which takes a disk
flush off the way from a purchase to the car; usage events and status wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

import aiomqtt
import structlog
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import Clock
from caas.core.db import CONFLICT_ATTEMPTS, retry_on_conflict
from caas.core.outbox import ASYNCHRONOUS_COMMIT
from caas.core.settings import Settings
from caas.iot.broker import BrokerAddress
from caas.ota.publisher import PublishFailed
from caas.protocol import mqtt
from caas.protocol.mqtt import (
    MalformedPayload,
    Reported,
    SoftwareStep,
    Status,
    Telemetry,
    UsageEvent,
)

log = structlog.get_logger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)

NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
# Subscriptions: (topic filter, QoS). Status is not shared: see the module's docstring.
SUBSCRIPTIONS: tuple[tuple[str, int], ...] = (
    (mqtt.shared(mqtt.REPORTED_FILTER), mqtt.QOS_REPORTED),
    (mqtt.shared(mqtt.TELEMETRY_FILTER), mqtt.QOS_TELEMETRY),
    (mqtt.shared(mqtt.EVENTS_FILTER), mqtt.QOS_EVENTS),
    (mqtt.STATUS_FILTER, mqtt.QOS_STATUS),
)
# Telemetry waiting for the database beyond this many batches is dropped, not queued forever.
MAX_BATCHES_IN_FLIGHT = 50
# Stored without waiting for the disk: the broker has their acknowledgement already (and a
# car's status is retained there: read again when a worker connects).
ASYNCHRONOUS_KINDS = frozenset({"report", "telemetry", "status"})
# Run again in a new transaction when PostgreSQL rolls theirs back for a deadlock or a
# serialization failure: a report dropped there would leave the car's purchase waiting for the
# platform's re-send. (Telemetry is not: its sink keeps memory of the levels it has seen.)
RETRIED_KINDS = frozenset({"report", "status"})
# Still queued when the bridge stops: not stored (see `Bridge.stop`).
DROPPED_WHEN_STOPPING = frozenset({"status", "telemetry"})


@dataclass(frozen=True)
class Sinks:
    """Where the bridge hands what the cars send; each call runs in its own transaction."""

    report: Callable[[Session, Reported, datetime], object]
    telemetry: Callable[[Session, list[Telemetry], datetime], int]
    events: Callable[[Session, list[UsageEvent], datetime], int]
    status: Callable[[Session, Status, datetime], object]
    # Steps of software updates (`caas.releases`); None: dropped.
    software: Callable[[Session, SoftwareStep, datetime], object] | None = None

    @classmethod
    def platform(cls) -> Sinks:
        """The platform's own: OTA acknowledgements and the vehicles' ingest."""
        from caas.ota.service import record_report
        from caas.releases.service import record_step
        from caas.upkeep.readings import LevelMemory
        from caas.vehicles import ingest

        upkeep_memory = LevelMemory()  # one per bridge: its single ingest thread uses it
        return cls(
            report=lambda session, item, now: record_report(session, item, now=now),
            telemetry=lambda session, items, now: ingest.store_telemetry(
                session, items, now=now, upkeep_memory=upkeep_memory
            ),
            events=lambda session, items, now: ingest.store_usage_events(session, items, now=now),
            status=lambda session, item, now: ingest.store_status(session, item, now=now),
            software=lambda session, item, now: record_step(session, item, now=now),
        )


class _ReportsFirst(asyncio.PriorityQueue[Any]):
    """aiomqtt's incoming queue, handing out reports and status before telemetry and events."""

    _order = itertools.count()

    def _put(self, item: Any) -> None:
        name = str(item.topic)
        urgent = name.endswith((f"/{mqtt.REPORTED}", f"/{mqtt.STATUS}"))
        super()._put((0 if urgent else 1, next(self._order), item))

    def _get(self) -> Any:
        return super()._get()[2]


class _Throttle:
    """At most `rate` messages per second per car, with bursts of twice that (token buckets)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}

    def allows(self, vin: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(vin, (2 * self.rate, now))
        tokens = min(2 * self.rate, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[vin] = (tokens, now)
            return False
        self._buckets[vin] = (tokens - 1, now)
        return True


def _client_id() -> str:
    return f"caas-worker-{socket.gethostname()[:30]}-{os.getpid()}-{secrets.token_hex(3)}"


class Bridge:
    """The worker's MQTT client (see the module's docstring); thread-safe `publish_desired`."""

    def __init__(
        self,
        address: BrokerAddress,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        sinks: Sinks | None = None,
        client_id: str | None = None,
        batch_size: int = 500,
        batch_seconds: float = 0.05,
        publish_timeout: float = 5.0,
        reconnect_seconds: float = 1.0,
        telemetry_per_second: float = 20.0,
        report_threads: int = 4,
    ) -> None:
        self.address = address
        self.sessions = sessions
        self.clock = clock
        self.sinks = sinks or Sinks.platform()
        self.client_id = client_id or _client_id()
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.publish_timeout = publish_timeout
        self.reconnect_seconds = reconnect_seconds
        self.telemetry_per_second = telemetry_per_second
        self.connected = threading.Event()
        self.counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._throttle = _Throttle(telemetry_per_second)
        self._reports = ThreadPoolExecutor(report_threads, thread_name_prefix="caas-mqtt-report")
        # One thread: status and batches are stored in the order they arrived.
        self._ingest = ThreadPoolExecutor(1, thread_name_prefix="caas-mqtt-ingest")
        self._in_flight = 0
        self._telemetry: list[Telemetry] = []
        self._events: list[UsageEvent] = []
        self._statuses: list[Status] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aiomqtt.Client | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._stopping_now = False  # `stop` was called: what is queued drains (see `stop`)

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: sessionmaker[Session], clock: Clock, **options: Any
    ) -> Bridge:
        if settings.mqtt_url is None:
            raise ValueError("CAAS_MQTT_URL is not set: the worker has no broker")
        return cls(BrokerAddress.from_settings(settings), sessions, clock, **options)

    # --- life ---------------------------------------------------------------------------------

    def start(self, *, wait: float = 5.0) -> Bridge:
        """Connect in a thread of its own (reconnecting whenever the connection drops); wait up
        to `wait` seconds for the first connection, without failing when the broker is down."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="caas-mqtt-bridge", daemon=True
        )
        self._thread.start()
        ready.wait(5)
        self.connected.wait(wait)
        return self

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        # What is queued is stored before the bridge stops, but for statuses and telemetry:
        # a thousand cars going offline at once queue a thousand statuses, stored one by one
        # for minutes after (into a database perhaps gone by then). Each car's status is
        # retained, read again at the next connection, and telemetry is QoS 0, lost with any
        # worker that dies; reports and events (QoS 1: configurations settled, metered use)
        # are still stored.
        self._stopping_now = True
        self._reports.shutdown(wait=True)
        self._ingest.shutdown(wait=True)

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        ready.set()
        while not self._stopping.is_set():
            try:
                await self._session()
            except aiomqtt.MqttError as error:
                log.warning("mqtt.bridge_disconnected", error=self.address.explain(error))
            finally:
                self.connected.clear()
                self._client = None
            if not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.reconnect_seconds)
        self._flush()

    async def _session(self) -> None:
        """One connection: subscribe, then take messages until the connection or the bridge
        stops."""
        assert self._stopping is not None
        client = aiomqtt.Client(
            self.address.host,
            self.address.port,
            username=self.address.username,
            password=self.address.password,
            tls_context=self.address.tls_context(),
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=True,
            keepalive=30,
            timeout=self.publish_timeout,
            queue_type=cast("type[asyncio.Queue[aiomqtt.Message]]", _ReportsFirst),
            max_queued_incoming_messages=100_000,
            socket_options=[NODELAY],
        )
        async with client:
            await client.subscribe(list(SUBSCRIPTIONS))
            self._client = client
            self.connected.set()
            log.info(
                "mqtt.bridge_connected",
                broker=f"{self.address.host}:{self.address.port}",
                tls=self.address.tls,
            )
            receiving = asyncio.create_task(self._receive(client))
            stopping = asyncio.create_task(self._stopping.wait())
            try:
                done, _ = await asyncio.wait(
                    {receiving, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (receiving, stopping):
                    task.cancel()
                await asyncio.gather(receiving, stopping, return_exceptions=True)
            if receiving in done and receiving.exception() is not None:
                raise cast(BaseException, receiving.exception())

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
            self.dispatch(str(message.topic), bytes(data))

    # --- out ----------------------------------------------------------------------------------

    def publish_desired(self, vin: str, payload: bytes) -> None:
        """Publish a signed manifest on the car's desired topic, retained with QoS 1; return
        when the broker has acknowledged it, PublishFailed otherwise. Not from the loop."""
        if not self.connected.wait(min(self.publish_timeout, 2.0)):
            raise PublishFailed("not connected to the broker")
        loop, client = self._loop, self._client
        if loop is None or client is None:
            raise PublishFailed("not connected to the broker")
        sent: Future[None] = asyncio.run_coroutine_threadsafe(
            client.publish(
                mqtt.desired_topic(vin),
                payload,
                qos=mqtt.QOS_DESIRED,
                retain=mqtt.RETAIN_DESIRED,
                timeout=self.publish_timeout,
            ),
            loop,
        )
        try:
            sent.result(timeout=self.publish_timeout + 1)
        except (aiomqtt.MqttError, FutureTimeout) as error:
            sent.cancel()
            raise PublishFailed(str(error) or type(error).__name__) from error
        self._count("published.desired")

    # --- in -----------------------------------------------------------------------------------

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counts_lock:
            self.counts[name] += amount

    def _decode(self, model: type[ModelT], vin: str, payload: bytes) -> ModelT | None:
        try:
            item = mqtt.decode(model, payload)
        except MalformedPayload as error:
            self._count("dropped.malformed")
            log.info("mqtt.malformed", vin=vin, kind=model.__name__, error=str(error))
            return None
        if getattr(item, "vin", vin) != vin:  # a car speaks only for itself
            self._count("dropped.foreign_vin")
            log.warning("mqtt.foreign_vin", topic_vin=vin, payload_vin=getattr(item, "vin", ""))
            return None
        return item

    def _decode_event(self, vin: str, payload: bytes) -> UsageEvent | SoftwareStep | None:
        try:
            event = mqtt.decode_event(payload)
        except MalformedPayload as error:
            self._count("dropped.malformed")
            log.info("mqtt.malformed", vin=vin, kind="event", error=str(error))
            return None
        if event.vin != vin:  # a car speaks only for itself
            self._count("dropped.foreign_vin")
            log.warning("mqtt.foreign_vin", topic_vin=vin, payload_vin=event.vin)
            return None
        return event

    def dispatch(self, topic: str, payload: bytes) -> None:
        """Hand one incoming message to its sink (on the loop's thread; never raises)."""
        try:
            vin, channel = mqtt.parse_topic(topic)
        except ValueError:
            self._count("dropped.foreign_topic")
            return
        self._count(f"received.{channel}")
        if channel == mqtt.REPORTED:
            reported = self._decode(Reported, vin, payload)
            if reported is not None:
                self._reports.submit(self._store, "report", self.sinks.report, reported)
        elif channel == mqtt.STATUS:
            status = self._decode(Status, vin, payload)
            if status is not None:
                self._statuses.append(status)
                self._batched()
        elif channel == mqtt.TELEMETRY:
            if not self._throttle.allows(vin):
                self._count("dropped.throttled")
                return
            telemetry = self._decode(Telemetry, vin, payload)
            if telemetry is not None:
                self._telemetry.append(telemetry)
                self._batched()
        elif channel == mqtt.EVENTS:
            event = self._decode_event(vin, payload)
            if isinstance(event, SoftwareStep):
                if self.sinks.software is not None:  # in the order the car sent them
                    self._submit_statuses()  # and after the statuses that came before it
                    self._ingest.submit(self._store, "software", self.sinks.software, event)
            elif event is not None:
                self._events.append(event)
                self._batched()
        else:
            self._count("dropped.foreign_topic")

    def _batched(self) -> None:
        if len(self._telemetry) + len(self._events) + len(self._statuses) >= self.batch_size:
            self._flush()
        elif not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_later(self.batch_seconds, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._submit_statuses()
        telemetry, self._telemetry = self._telemetry, []
        events, self._events = self._events, []
        if events:
            self._submit_batch("events", self.sinks.events, events)
        if telemetry:
            if self._in_flight >= MAX_BATCHES_IN_FLIGHT:
                self._count("dropped.backlog", len(telemetry))
            else:
                self._submit_batch("telemetry", self.sinks.telemetry, telemetry)

    def _submit_batch(
        self, kind: str, sink: Callable[[Session, Any, datetime], Any], items: Any
    ) -> None:
        self._in_flight += 1

        def done(_: Future[None]) -> None:
            if self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    self._loop.call_soon_threadsafe(self._landed)

        try:
            self._ingest.submit(self._store, kind, sink, items).add_done_callback(done)
        except RuntimeError:  # shutting down
            self._in_flight -= 1

    def _submit_statuses(self) -> None:
        statuses, self._statuses = self._statuses, []
        if statuses:
            self._submit_batch("status", self._store_statuses, statuses)

    def _store_statuses(self, session: Session, statuses: list[Status], now: datetime) -> int:
        """Many cars' statuses in one transaction, taken in VIN order (another replica's batch
        locks the same cars' rows in the same order); one car's keep the order they came in.
        How many were news."""
        ordered = sorted(statuses, key=lambda status: status.vin)
        return sum(1 for status in ordered if self.sinks.status(session, status, now))

    def _landed(self) -> None:
        self._in_flight -= 1

    def _store(self, kind: str, sink: Callable[[Session, Any, datetime], Any], item: Any) -> None:
        """Run a sink in its own transaction (on an executor's thread); reports and telemetry
        commit without waiting for the disk (see the module's docstring). A report whose
        transaction PostgreSQL rolled back for colliding with another (a deadlock) is stored
        again in a new one, a few times (`caas.core.db.retry_on_conflict`).

        A batch stored is logged at debug level with the bridge's client id (host, process):
        with several workers sharing the stream, it tells which of them stored what."""

        if self._stopping_now and kind in DROPPED_WHEN_STOPPING:
            self._count(f"dropped.stopping.{kind}", len(item) if isinstance(item, list) else 1)
            return

        def work(session: Session) -> Any:
            if kind in ASYNCHRONOUS_KINDS:
                session.execute(ASYNCHRONOUS_COMMIT)
            return sink(session, item, self.clock.now())

        attempts = CONFLICT_ATTEMPTS if kind in RETRIED_KINDS else 1
        try:
            result = retry_on_conflict(self.sessions, work, attempts=attempts, what=f"mqtt.{kind}")
        except Exception:  # a bad message or a database hiccup must not stop the bridge
            self._count(f"failed.{kind}")
            log.exception("mqtt.store_failed", kind=kind)
            return
        self._count(f"stored.{kind}", len(item) if isinstance(item, list) else 1)
        if isinstance(item, list):
            log.debug(
                "mqtt.batch_stored",
                kind=kind,
                received=len(item),
                new=result if isinstance(result, int) else None,
                bridge=self.client_id,
            )
