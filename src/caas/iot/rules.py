"""Who may touch which MQTT topics: a car only its own, the platform's service account its job.

The same rules are enforced by Mosquitto (turned into dynamic-security roles by
`caas.iot.broker.DynsecAdmin`) and by the embedded amqtt broker (checked by
`caas.iot.embedded.CarTopicPlugin`), so both brokers refuse the same things.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from caas.protocol import mqtt

SHARED_PREFIX = "$share/"

# The largest MQTT packet (fixed header, topic and payload) either broker takes from any client;
# a client that sends a larger one is disconnected and the message goes nowhere, so a car (or
# whoever holds its password) cannot push megabytes at the platform's bridge. The largest
# legitimate messages are far below it: a car's messages are a few KiB at most (a telemetry
# sample at the protocol's bounds, 50 extra readings, is 3.7 KiB), and a signed manifest at
# the protocol's bounds (200 features, 20 phone keys, 20 messages of 500 characters, a software
# order) is 64 KiB without feature parameters, 155 KiB with five 40-character parameters on
# every feature (`tests/security/test_mqtt_probes.py` sends such a manifest through both
# brokers).
MAX_PACKET_SIZE: Final = 256 * 1024


def is_shared(topic_filter: str) -> bool:
    return topic_filter.startswith(SHARED_PREFIX)


def unshared(topic_filter: str) -> str:
    """The topic filter inside a shared subscription (`$share/{group}/{filter}`), else itself."""
    if not is_shared(topic_filter):
        return topic_filter
    parts = topic_filter.split("/", 2)
    return parts[2] if len(parts) == 3 else ""


def matches(topic_filter: str, topic: str) -> bool:
    """Whether the topic name `topic` matches `topic_filter` (MQTT wildcards + and #)."""
    if topic.startswith("$") and topic_filter.startswith(("+", "#")):
        return False  # [MQTT-4.7.2-1]
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return index == len(filter_levels) - 1
        if index >= len(topic_levels) or level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


def covers(allowed: str, requested: str) -> bool:
    """Whether every topic that filter `requested` can match is matched by filter `allowed`.

    Shared subscriptions compare as plain levels, so `$share/caas/a/+` covers `$share/caas/a/b`
    but not `$share/other/a/b` nor `a/b`.
    """
    allowed_levels = allowed.split("/")
    requested_levels = requested.split("/")
    for index, level in enumerate(allowed_levels):
        if level == "#":
            return index == len(allowed_levels) - 1
        if index >= len(requested_levels):
            return False
        wanted = requested_levels[index]
        if wanted == "#" or level not in ("+", wanted):
            return False
    return len(allowed_levels) == len(requested_levels)


@dataclass(frozen=True)
class Permissions:
    """What one broker account may do: publish to topics, subscribe to filters."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def may_publish(self, topic: str) -> bool:
        return (
            "+" not in topic
            and "#" not in topic
            and any(matches(allowed, topic) for allowed in self.publish)
        )

    def may_subscribe(self, topic_filter: str) -> bool:
        return any(covers(allowed, topic_filter) for allowed in self.subscribe)

    def may_receive(self, topic: str) -> bool:
        """Whether a message on `topic` may be delivered to the account (checked at delivery)."""
        return any(matches(unshared(allowed), topic) for allowed in self.subscribe)

    def receive_filters(self) -> tuple[str, ...]:
        """The plain topic filters whose messages the account receives (shared ones unwrapped)."""
        return tuple(dict.fromkeys(unshared(allowed) for allowed in self.subscribe))


def car_permissions(vin: str) -> Permissions:
    """A car publishes only to its own reported, telemetry, events and status topics and
    subscribes only to its own desired topic, exactly (no wildcards, no shared subscriptions)."""
    return Permissions(
        publish=tuple(mqtt.topic(vin, channel) for channel in mqtt.CAR_PUBLISHES),
        subscribe=tuple(mqtt.topic(vin, channel) for channel in mqtt.CAR_SUBSCRIBES),
    )


PLATFORM_SUBSCRIBES: tuple[str, ...] = (
    mqtt.REPORTED_FILTER,
    mqtt.TELEMETRY_FILTER,
    mqtt.EVENTS_FILTER,
    mqtt.STATUS_FILTER,
)


def platform_permissions() -> Permissions:
    """The platform's own account: publishes every car's desired configuration and reads every
    car's reports, telemetry, events and status, directly or as the shared group `caas`."""
    return Permissions(
        publish=(mqtt.DESIRED_FILTER,),
        subscribe=PLATFORM_SUBSCRIBES + tuple(mqtt.shared(f) for f in PLATFORM_SUBSCRIBES),
    )
