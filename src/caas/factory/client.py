"""The platform's side of the Factory Order API: placing an order, and handing the factory a
born car's provisioning bundle, over HTTP."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from caas.protocol.factory import (
    API_KEY_HEADER,
    IDEMPOTENCY_HEADER,
    ORDERS_PATH,
    CarProvisioned,
    CarProvisioning,
    FactoryOrderAck,
    FactoryOrderCreate,
    provisioning_path,
)


class FactoryUnavailable(Exception):
    """The factory did not answer, timed out or failed (5xx): try again later."""


class FactoryRejected(Exception):
    """The factory refused the order (4xx): someone has to look, but we keep retrying."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"factory answered {status}: {body[:500]}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class FactoryClient:
    base_url: str
    api_key: str
    timeout_seconds: float = 10.0
    transport: httpx.BaseTransport | None = None

    def _send(
        self, method: str, path: str, body: dict[str, object], headers: dict[str, str] | None = None
    ) -> bytes:
        """One request; FactoryUnavailable or FactoryRejected unless it was answered 2xx."""
        try:
            with httpx.Client(
                base_url=self.base_url, timeout=self.timeout_seconds, transport=self.transport
            ) as http:
                response = http.request(
                    method,
                    path,
                    json=body,
                    headers={API_KEY_HEADER: self.api_key, **(headers or {})},
                )
        except httpx.HTTPError as error:
            raise FactoryUnavailable(f"{type(error).__name__}: {error}") from error
        if response.status_code >= 500:
            raise FactoryUnavailable(f"factory answered {response.status_code}")
        if response.status_code >= 400:
            raise FactoryRejected(response.status_code, response.text)
        return response.content

    def provision_car(self, bundle: CarProvisioning) -> CarProvisioned:
        """PUT the car's provisioning bundle for the end of the line (idempotent by VIN)."""
        answer = self._send("PUT", provisioning_path(bundle.vin), bundle.model_dump(mode="json"))
        try:
            return CarProvisioned.model_validate_json(answer)
        except ValidationError as error:
            raise FactoryUnavailable(f"unreadable answer: {error}") from error

    def place_order(self, order: FactoryOrderCreate) -> FactoryOrderAck:
        """POST the order, keyed by its id: a repeat returns the first acknowledgement."""
        answer = self._send(
            "POST",
            ORDERS_PATH,
            order.model_dump(mode="json"),
            {IDEMPOTENCY_HEADER: order.order_id},
        )
        try:
            return FactoryOrderAck.model_validate_json(answer)
        except ValidationError as error:
            # An unreadable acknowledgement is a fault on the factory's side: ask again.
            raise FactoryUnavailable(f"unreadable acknowledgement: {error}") from error
