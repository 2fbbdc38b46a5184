"""The background worker: delivers the outbox (e-mails, factory orders, registrations...)."""

from __future__ import annotations

import threading

import structlog
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import Clock, SystemClock
from caas.core.outbox import Handler, Relay
from caas.core.settings import Settings

log = structlog.get_logger(__name__)


def build_handlers(settings: Settings, clock: Clock | None = None) -> dict[str, Handler]:
    """Every outbox topic with the function that delivers it; each domain adds its own.

    `clock` is the relay's: handlers that change state date it with the same clock.
    """
    from caas.factory.jobs import handlers as factory_handlers
    from caas.iot.jobs import handlers as iot_handlers
    from caas.notifications.jobs import handlers as notification_handlers
    from caas.registration.jobs import handlers as registration_handlers

    clock = clock or SystemClock()
    handlers: dict[str, Handler] = {}
    handlers.update(notification_handlers(settings))
    handlers.update(factory_handlers(settings, clock))
    handlers.update(registration_handlers(settings, clock))
    handlers.update(iot_handlers(settings, clock))
    return handlers


def build_relay(settings: Settings, sessions: sessionmaker[Session], clock: Clock) -> Relay:
    return Relay(
        sessions=sessions,
        clock=clock,
        handlers=build_handlers(settings, clock),
        max_attempts=settings.outbox_max_attempts,
    )


class Worker:
    """Runs the relay in a thread until stopped; several workers may run side by side."""

    def __init__(self, relay: Relay, *, idle_seconds: float = 0.5) -> None:
        self.relay = relay
        self.idle_seconds = idle_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_forever(self) -> None:
        log.info("worker.started", topics=sorted(self.relay.handlers))
        while not self._stop.is_set():
            try:
                handled = self.relay.run_once()
            except Exception:  # a broken database must not kill the worker
                log.exception("worker.cycle_failed")
                handled = 0
            if handled == 0:
                self._stop.wait(self.idle_seconds)
        log.info("worker.stopped")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="caas-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
