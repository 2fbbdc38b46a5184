"""Background work of registration: sending each attempt to the country's registry."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from caas.core.clock import Clock
from caas.core.outbox import Handler, RetryLater
from caas.core.settings import Settings
from caas.registration import service
from caas.registration.base import RegistryUnavailable
from caas.registration.client import RegistryClient


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    client = RegistryClient(base_url=settings.registry_url, api_key=settings.registry_api_key)

    def submit(session: Session, payload: dict[str, Any]) -> None:
        # A registry that is down is waited for as long as it takes; an answer we cannot
        # accept (RegistryFault) is retried with backoff until the relay parks it.
        try:
            service.submit_attempt(
                session,
                sale_id=int(payload["sale_id"]),
                attempt=int(payload["attempt"]),
                send=client.send,
                now=clock.now(),
            )
        except RegistryUnavailable as error:
            raise RetryLater(str(error)) from error

    return {service.SUBMIT_TOPIC: submit}
