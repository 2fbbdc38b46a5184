"""Background work of the IoT network: giving the broker each car's new password."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.orm import Session

from caas.core.clock import Clock
from caas.core.outbox import Handler, RetryLater
from caas.core.settings import Settings
from caas.iot import service
from caas.iot.broker import BrokerAdmin, BrokerAdminError

log = structlog.get_logger(__name__)


def deliver_credentials(
    session: Session,
    payload: dict[str, Any],
    *,
    admin: BrokerAdmin,
    settings: Settings,
    clock: Clock,
) -> None:
    """Create or update the car's broker account with its pending password, then wipe it.

    Nothing pending means a later message already delivered the newest password.
    """
    vin = payload["vin"]
    pending = service.take_pending_password(session, vin=vin, settings=settings)
    if pending is None:
        log.info("iot.credentials_already_delivered", vin=vin)
        return
    credential, password = pending
    try:
        admin.add_car(vin, password)
    except BrokerAdminError as error:
        raise RetryLater(f"broker: {error}") from error
    service.password_delivered(credential, now=clock.now())
    log.info("iot.credentials_delivered", vin=vin, generation=credential.generation)


def remove_account(payload: dict[str, Any], *, admin: BrokerAdmin) -> None:
    """Delete a revoked car's broker account (a connected car is disconnected)."""
    try:
        admin.remove_car(payload["vin"])
    except BrokerAdminError as error:
        raise RetryLater(f"broker: {error}") from error
    log.info("iot.credentials_revoked", vin=payload["vin"])


class _LazyAdmin:
    """Connects to the broker only when a message needs it (the worker may start first)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin: BrokerAdmin | None = None

    def get(self) -> BrokerAdmin:
        if self._admin is None:
            from caas.iot.local import broker_admin  # the embedded broker's amqtt: only if used

            try:
                self._admin = broker_admin(self.settings)
            except BrokerAdminError as error:
                raise RetryLater(str(error)) from error
        return self._admin


def handlers(
    settings: Settings, clock: Clock, admin: BrokerAdmin | None = None
) -> dict[str, Handler]:
    lazy = _LazyAdmin(settings)

    def deliver(session: Session, payload: dict[str, Any]) -> None:
        deliver_credentials(
            session, payload, admin=admin or lazy.get(), settings=settings, clock=clock
        )

    def revoke(_session: Session, payload: dict[str, Any]) -> None:
        remove_account(payload, admin=admin or lazy.get())

    return {service.PROVISION_TOPIC: deliver, service.REVOKE_TOPIC: revoke}
