"""Background work of the factory domain: sending queued orders to the factory."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.orm import Session

from caas.core.clock import Clock
from caas.core.outbox import Handler, RetryLater
from caas.core.settings import Settings
from caas.factory import service
from caas.factory.client import FactoryClient, FactoryRejected, FactoryUnavailable
from caas.protocol.factory import EVENTS_PATH, FactoryOrderCreate

log = structlog.get_logger(__name__)


def place_order(
    session: Session,
    payload: dict[str, Any],
    *,
    client: FactoryClient,
    callback_url: str,
    clock: Clock,
) -> None:
    """Send one queued order; any failure is retried later, for as long as it takes."""
    order = FactoryOrderCreate.model_validate(
        {**payload["order"], "callback": {"url": callback_url}}
    )
    try:
        ack = client.place_order(order)
    except FactoryUnavailable as error:
        raise RetryLater(f"factory unavailable: {error}") from error
    except FactoryRejected as error:
        # A refusal needs a person (bad key, unknown model...); the order stays queued meanwhile.
        log.error(
            "factory.order_rejected", order_id=order.order_id, status=error.status, body=error.body
        )
        raise RetryLater(str(error)) from error
    if ack.order_id != order.order_id:
        raise RetryLater(f"the factory acknowledged {ack.order_id!r}, not {order.order_id!r}")
    service.order_acknowledged(session, sale_id=int(payload["sale_id"]), ack=ack, now=clock.now())
    log.info("factory.order_placed", order_id=order.order_id, reference=ack.factory_reference)


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    client = FactoryClient(base_url=settings.factory_url, api_key=settings.factory_api_key)
    callback_url = settings.public_url.rstrip("/") + EVENTS_PATH

    def deliver(session: Session, payload: dict[str, Any]) -> None:
        place_order(session, payload, client=client, callback_url=callback_url, clock=clock)

    return {service.PLACE_ORDER_TOPIC: deliver}
