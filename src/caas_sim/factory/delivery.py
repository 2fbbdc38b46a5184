"""Delivering stage events to the platform as signed webhooks, in order, retried with backoff."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import structlog

from caas.protocol.webhooks import SIGNATURE_HEADER, sign
from caas_sim.factory.floor import FactoryFloor, OwedEvent

log = structlog.get_logger(__name__)


@dataclass
class WebhookSender:
    floor: FactoryFloor
    webhook_url: str
    webhook_secret: str
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    timeout_seconds: float = 10.0
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def backoff(self, attempts: int) -> timedelta:
        delay = self.retry_base_seconds * 2 ** max(attempts - 1, 0)
        return timedelta(seconds=min(delay, self.retry_max_seconds))

    async def send(self, owed: OwedEvent) -> int | None:
        """POST one event, freshly signed; the platform's status, or None if it did not answer."""
        body = owed.event.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, self.webhook_secret),
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds) as http:
                response = await http.post(self.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as error:
            owed.last_status = None
            owed.last_error = f"{type(error).__name__}: {error}"
            return None
        owed.last_status = response.status_code
        if not response.is_success:
            owed.last_error = f"{response.status_code}: {response.text[:300]}"
        return response.status_code

    async def deliver_owed(self, order_id: str, *, now: datetime, force: bool = False) -> None:
        """Deliver the order's undelivered events oldest first; stop at the first failure.

        Without `force`, an event waiting for its backoff is left for a later round.
        """
        lock = self._locks.setdefault(order_id, asyncio.Lock())
        async with lock:
            order = self.floor.get(order_id)
            if order is None:
                return
            for owed in order.undelivered():
                if not force and owed.next_attempt_at > now:
                    break
                status = await self.send(owed)
                owed.attempts += 1
                if status is not None and 200 <= status < 300:
                    owed.delivered = True
                    owed.last_error = None
                    log.info(
                        "factory_sim.event_delivered",
                        order_id=order_id,
                        stage=owed.event.stage,
                        sequence=owed.event.sequence,
                    )
                    continue
                owed.next_attempt_at = now + self.backoff(owed.attempts)
                log.warning(
                    "factory_sim.event_not_delivered",
                    order_id=order_id,
                    sequence=owed.event.sequence,
                    attempts=owed.attempts,
                    error=owed.last_error,
                )
                break
            self.floor.save()

    async def resend(self, owed: OwedEvent) -> int | None:
        """Send an event again, whether or not it was delivered (duplicate-delivery tests)."""
        status = await self.send(owed)
        if status is not None and 200 <= status < 300:
            owed.delivered = True
            self.floor.save()
        return status

    def owing(self, now: datetime) -> list[str]:
        """Orders with an event due for (another) delivery attempt."""
        return [
            order.order.order_id
            for order in self.floor.orders()
            if any(owed.next_attempt_at <= now for owed in order.undelivered())
        ]
