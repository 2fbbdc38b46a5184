"""The background worker: delivers the outbox (e-mails, factory orders, registrations...) and,
with a broker, talks MQTT with the cars (`caas.iot.bridge`)."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import Clock, SystemClock
from caas.core.db import database_unreachable, listen_url
from caas.core.outbox import Handler, OutboxListener, Relay
from caas.core.settings import Settings

if TYPE_CHECKING:
    from caas.iot.bridge import Bridge
    from caas.ota.publisher import DesiredPublisher

log = structlog.get_logger(__name__)

# How often an idle relay waiting for NOTIFY looks whether it was asked to stop.
STOP_CHECK_SECONDS = 0.5
# Threads publishing configurations: while one waits for the broker or the database, the next
# change does not queue behind it (publications of one car stay in order: see
# `caas.ota.service.version_to_publish`).
EXPRESS_THREADS = 2


def build_handlers(
    settings: Settings, clock: Clock | None = None, publisher: DesiredPublisher | None = None
) -> dict[str, Handler]:
    """Every outbox topic with the function that delivers it; each domain adds its own.

    `clock` is the relay's: handlers that change state date it with the same clock.
    `publisher` sends configurations to the cars (the worker's MQTT bridge).
    """
    from caas.billing.resolve import handlers as billing_handlers
    from caas.factory.jobs import handlers as factory_handlers
    from caas.iot.jobs import handlers as iot_handlers
    from caas.notifications.jobs import handlers as notification_handlers
    from caas.ota.jobs import handlers as ota_handlers
    from caas.ownership.jobs import handlers as ownership_handlers
    from caas.registration.jobs import handlers as registration_handlers
    from caas.releases.jobs import handlers as release_handlers
    from caas.store.jobs import handlers as store_handlers
    from caas.upkeep.jobs import handlers as upkeep_handlers
    from caas.upkeep.readings import handlers as upkeep_reading_handlers

    clock = clock or SystemClock()
    handlers: dict[str, Handler] = {}
    handlers.update(notification_handlers(settings))
    handlers.update(factory_handlers(settings, clock))
    handlers.update(registration_handlers(settings, clock))
    handlers.update(iot_handlers(settings, clock))
    handlers.update(ota_handlers(settings, clock, publisher))
    handlers.update(store_handlers(settings, clock))
    handlers.update(ownership_handlers(settings, clock))
    handlers.update(billing_handlers(settings, clock))
    handlers.update(release_handlers(clock))
    handlers.update(upkeep_handlers(settings, clock))
    handlers.update(upkeep_reading_handlers(clock))
    return handlers


def build_relay(
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: Clock,
    publisher: DesiredPublisher | None = None,
) -> Relay:
    return Relay(
        sessions=sessions,
        clock=clock,
        handlers=build_handlers(settings, clock, publisher),
        max_attempts=settings.outbox_max_attempts,
    )


def build_worker(settings: Settings, sessions: sessionmaker[Session], clock: Clock) -> Worker:
    """The worker of `caas worker` and `caas demo`: the relay in `settings.worker_threads`
    threads woken by NOTIFY, the MQTT bridge when `CAAS_MQTT_URL` is set, and threads of
    their own (`EXPRESS_THREADS`) for configurations on their way to cars, which must not wait
    behind an e-mail or a slow factory.

    Those threads commit without waiting for the disk (`Relay.durable`): publishing leaves only
    the version's publication marks behind, and a publication lost with them is published
    again (the car answers a manifest it already runs once more). It spares the car a disk
    flush between the purchase and its configuration.
    """
    from caas.iot.bridge import Bridge
    from caas.ota.service import PUBLISH_TOPIC

    bridge = (
        Bridge.from_settings(settings, sessions, clock) if settings.mqtt_url is not None else None
    )
    handlers = build_handlers(settings, clock, bridge)
    express = {PUBLISH_TOPIC: handlers.pop(PUBLISH_TOPIC)}

    def relay(topics: dict[str, Handler], *, durable: bool = True) -> Relay:
        return Relay(
            sessions=sessions,
            clock=clock,
            handlers=topics,
            max_attempts=settings.outbox_max_attempts,
            durable=durable,
        )

    return Worker(
        relay(handlers),
        threads=settings.worker_threads,
        listener_url=listen_url(sessions),
        bridge=bridge,
        express=relay(express, durable=False),
    )


def _first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    return (str(original).strip().splitlines() or [type(original).__name__])[0]


class Worker:
    """Runs the relay until stopped; several workers may run side by side.

    Idle, each relay thread waits for the outbox's NOTIFY (with `listener_url`) or polls every
    `idle_seconds`; `bridge` (the MQTT connection) runs beside the relay for as long.
    """

    def __init__(
        self,
        relay: Relay,
        *,
        idle_seconds: float = 0.5,
        threads: int = 1,
        listener_url: str | None = None,
        bridge: Bridge | None = None,
        express: Relay | None = None,
        express_threads: int = EXPRESS_THREADS,
    ) -> None:
        self.relay = relay
        self.express = express
        self.express_threads = express_threads
        self.idle_seconds = idle_seconds
        self.threads = threads
        self.listener_url = listener_url
        self.bridge = bridge
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_forever(self) -> None:
        """Deliver in this thread (and `threads - 1` more, and `express_threads` for `express`)
        until `stop`."""
        express = sorted(self.express.handlers) if self.express else []
        log.info(
            "worker.started",
            topics=sorted(self.relay.handlers),
            threads=self.threads,
            express=express,
            # Which replica this is, in the logs of several: the host and process, and the
            # MQTT client id its bridge stores telemetry under (`mqtt.batch_stored`).
            host=socket.gethostname(),
            pid=os.getpid(),
            bridge=self.bridge.client_id if self.bridge is not None else None,
        )
        from caas.store.jobs import start_chains

        start_chains(self.relay.sessions, self.relay.clock)
        from caas.billing.resolve import start_sweeping

        start_sweeping(self.relay.sessions, self.relay.clock)
        if self.bridge is not None:
            self.bridge.start()
        helpers = [
            threading.Thread(
                target=self._deliver, args=(self.relay,), name=f"caas-relay-{n}", daemon=True
            )
            for n in range(1, self.threads)
        ]
        if self.express is not None:
            helpers += [
                threading.Thread(
                    target=self._deliver,
                    args=(self.express,),
                    name=f"caas-relay-express-{n}",
                    daemon=True,
                )
                for n in range(self.express_threads)
            ]
        for helper in helpers:
            helper.start()
        try:
            self._deliver(self.relay)
        finally:
            self._stop.set()
            for helper in helpers:
                helper.join(timeout=10)
            if self.bridge is not None:
                self.bridge.stop()
        log.info("worker.stopped")

    def _deliver(self, relay: Relay) -> None:
        listener = (
            OutboxListener(self.listener_url, topics=relay.handlers) if self.listener_url else None
        )
        if listener is not None:
            listener.listen()  # before the first look at the outbox: no commit is missed
        try:
            while not self._stop.is_set():
                try:
                    handled = relay.run_once()
                except Exception as error:  # a broken database must not kill the worker
                    if database_unreachable(error):
                        # Down or restarting: one line per try, not a traceback every half
                        # second per thread (formatting those held up the threads that log
                        # while holding a transaction, long after the database was back).
                        log.warning("worker.database_unavailable", error=_first_line(error))
                    else:
                        log.exception("worker.cycle_failed")
                    handled = 0
                if handled == 0:
                    self._idle(listener)
        finally:
            if listener is not None:
                listener.close()

    def _idle(self, listener: OutboxListener | None) -> None:
        """Until a notification, `idle_seconds`, or `stop` (noticed within half a second)."""
        if listener is None:
            self._stop.wait(self.idle_seconds)
            return
        deadline = time.monotonic() + self.idle_seconds
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or listener.wait(min(remaining, STOP_CHECK_SECONDS)):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="caas-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask every thread to stop and wait up to `timeout` seconds for the jobs in hand and
        the bridge to finish; whether they did."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            return not self._thread.is_alive()
        return True
