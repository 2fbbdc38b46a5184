"""Background work of the factory domain: sending queued orders to the factory, and each born
car's provisioning bundle to its end of line."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import structlog
from sqlalchemy.orm import Session

from caas.core.clock import Clock
from caas.core.outbox import Handler, RetryLater
from caas.core.settings import Settings
from caas.factory import service
from caas.factory.client import FactoryClient, FactoryRejected, FactoryUnavailable
from caas.iot import service as iot
from caas.iot.broker import MQTT_PORT, MQTTS_PORT, TLS_SCHEMES
from caas.ota import service as ota
from caas.protocol.factory import EVENTS_PATH, CarProvisioning, FactoryOrderCreate
from caas.protocol.manifest import public_key_b64

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


def car_broker_url(settings: Settings) -> str:
    """Where cars connect: the platform's broker, without the platform's own credentials."""
    if settings.mqtt_url is None:
        raise RetryLater("CAAS_MQTT_URL is not set: no broker address for the car yet")
    parsed = urlparse(settings.mqtt_url)
    if not parsed.hostname:
        raise RetryLater(f"CAAS_MQTT_URL has no host: {parsed.scheme}://...")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    # The cars speak TLS to the broker when the platform does; the bundle knows two schemes.
    if parsed.scheme in TLS_SCHEMES:
        return f"mqtts://{host}:{parsed.port or MQTTS_PORT}"
    return f"mqtt://{host}:{parsed.port or MQTT_PORT}"


def send_provisioning(
    session: Session,
    payload: dict[str, Any],
    *,
    client: FactoryClient,
    settings: Settings,
    clock: Clock,
) -> None:
    """Hand the factory a born car's provisioning bundle to flash into it, then wipe the
    platform's copy of the password. Nothing waiting means it was handed over already."""
    vin = payload["vin"]
    waiting = iot.take_bundle_password(session, vin=vin, settings=settings)
    if waiting is None:
        log.info("factory.provisioning_already_flashed", vin=vin)
        return
    credential, password = waiting
    bundle = CarProvisioning(
        vin=vin,
        mqtt_username=vin,
        mqtt_password=password,
        broker_url=car_broker_url(settings),
        root_public_key=public_key_b64(ota.signing_material(settings).root_public_key),
    )
    try:
        client.provision_car(bundle)
    except FactoryUnavailable as error:
        raise RetryLater(f"factory unavailable: {error}") from error
    except FactoryRejected as error:
        log.error("factory.provisioning_rejected", vin=vin, status=error.status, body=error.body)
        raise RetryLater(str(error)) from error
    iot.bundle_delivered(session, credential, now=clock.now())
    log.info("factory.car_provisioned", vin=vin)


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    client = FactoryClient(base_url=settings.factory_url, api_key=settings.factory_api_key)
    callback_url = settings.public_url.rstrip("/") + EVENTS_PATH

    def deliver(session: Session, payload: dict[str, Any]) -> None:
        place_order(session, payload, client=client, callback_url=callback_url, clock=clock)

    def provision(session: Session, payload: dict[str, Any]) -> None:
        send_provisioning(session, payload, client=client, settings=settings, clock=clock)

    return {service.PLACE_ORDER_TOPIC: deliver, service.PROVISION_CAR_TOPIC: provision}
