"""Background work of OTA: publishing each configuration version, re-sending it to a silent
car, and the operator's fleet-wide re-sign a batch of cars at a time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.orm import Session

from caas.core.clock import Clock
from caas.core.faults import kill_point
from caas.core.outbox import Handler, RetryLater
from caas.core.settings import Settings
from caas.ota import pushes, service
from caas.ota.publisher import DesiredPublisher, PublishFailed

log = structlog.get_logger(__name__)


def publish_configuration(
    session: Session,
    payload: dict[str, Any],
    *,
    publisher: DesiredPublisher | None,
    clock: Clock,
    resend_after: timedelta,
) -> None:
    """Publish the version on its car's desired topic, retained with QoS 1, unless the car has
    answered it or a newer version replaced it meanwhile, and queue the next re-send. A
    manifest too large for the broker's packet limit is given up (`publication_refused`)
    rather than retried forever.

    The publication is noted (and the re-send queued) before the broker is asked, in the same
    transaction, which a failed publication rolls back: once the broker has acknowledged, only
    the commit is left, and the car's answer, which waits for this transaction's lock on the
    version, is stored sooner.
    """
    found = service.version_to_publish(session, int(payload["version_id"]))
    if found is None:
        return
    version, vin = found
    if publisher is None:
        raise RetryLater("this worker has no MQTT connection (CAAS_MQTT_URL is not set)")
    payload_bytes = service.manifest_payload(version)
    size = service.packet_size(vin, payload_bytes)
    if not service.fits_in_a_packet(size):
        # The broker would refuse it at every attempt: given up, not retried.
        service.publication_refused(session, version, size=size, now=clock.now())
        return
    service.published(session, version, now=clock.now(), resend_after=resend_after)
    session.flush()
    kill_point("ota.publish", vin)
    try:
        publisher.publish_desired(vin, payload_bytes)
    except PublishFailed as error:
        raise RetryLater(f"broker: {error}") from error
    log.info("ota.published", vin=vin, version=version.version, times=version.publish_count)


def clear_desired(payload: dict[str, Any], *, publisher: DesiredPublisher | None) -> None:
    """Remove a scrapped car's retained manifest from the broker (an empty retained message)."""
    if publisher is None:
        raise RetryLater("this worker has no MQTT connection (CAAS_MQTT_URL is not set)")
    try:
        publisher.publish_desired(payload["vin"], b"")
    except PublishFailed as error:
        raise RetryLater(f"broker: {error}") from error
    log.info("ota.desired_cleared", vin=payload["vin"])


def handlers(
    settings: Settings, clock: Clock, publisher: DesiredPublisher | None = None
) -> dict[str, Handler]:
    resend_after = timedelta(seconds=settings.ota_resend_seconds)

    def publish(session: Session, payload: dict[str, Any]) -> None:
        publish_configuration(
            session, payload, publisher=publisher, clock=clock, resend_after=resend_after
        )

    def clear(_session: Session, payload: dict[str, Any]) -> None:
        clear_desired(payload, publisher=publisher)

    def resign(session: Session, payload: dict[str, Any]) -> None:
        pushes.resign_batch(session, payload, now=clock.now())

    return {
        service.PUBLISH_TOPIC: publish,
        service.CLEAR_TOPIC: clear,
        pushes.RESIGN_TOPIC: resign,
    }
