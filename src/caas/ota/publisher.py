"""What the OTA jobs need from the MQTT side: publish a car's desired configuration."""

from __future__ import annotations

from typing import Protocol


class PublishFailed(RuntimeError):
    """The broker did not acknowledge the message (not connected, or no answer in time)."""


class DesiredPublisher(Protocol):
    """Publishes a signed manifest on a car's desired topic, retained, QoS 1.

    `caas.iot.bridge.Bridge` is the worker's; tests may pass their own.
    """

    def publish_desired(self, vin: str, payload: bytes) -> None:
        """Return once the broker has acknowledged the message; PublishFailed otherwise."""
