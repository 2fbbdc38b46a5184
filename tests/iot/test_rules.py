"""The access rules themselves, without a broker."""

from __future__ import annotations

from caas.iot.rules import car_permissions, covers, matches, platform_permissions, unshared
from caas.protocol import mqtt
from caas.protocol.vin import make_vin

CAR = make_vin("VCA", "AURA0", "T", "M", 1)
OTHER = make_vin("VCA", "AURA0", "T", "M", 2)


def test_a_car_publishes_only_to_its_own_car_to_platform_topics() -> None:
    rights = car_permissions(CAR)
    for channel in mqtt.CAR_PUBLISHES:
        assert rights.may_publish(mqtt.topic(CAR, channel))
        assert not rights.may_publish(mqtt.topic(OTHER, channel))
    assert not rights.may_publish(mqtt.desired_topic(CAR))
    assert not rights.may_publish(f"{mqtt.TOPIC_PREFIX}/+/status")


def test_a_car_subscribes_only_to_its_own_desired_topic_exactly() -> None:
    rights = car_permissions(CAR)
    assert rights.may_subscribe(mqtt.desired_topic(CAR))
    for topic_filter in (
        mqtt.desired_topic(OTHER),
        mqtt.DESIRED_FILTER,
        f"{mqtt.TOPIC_PREFIX}/{CAR}/#",
        f"{mqtt.TOPIC_PREFIX}/{CAR}/config/+",
        mqtt.shared(mqtt.desired_topic(CAR)),
        "#",
        mqtt.reported_topic(CAR),
    ):
        assert not rights.may_subscribe(topic_filter), topic_filter
    assert rights.may_receive(mqtt.desired_topic(CAR))
    assert not rights.may_receive(mqtt.desired_topic(OTHER))


def test_the_rules_agree_with_the_protocols_own_statement() -> None:
    rights = car_permissions(CAR)
    for vin in (CAR, OTHER):
        for channel in mqtt.CHANNELS:
            topic = mqtt.topic(vin, channel)
            assert rights.may_publish(topic) == mqtt.car_may_publish(CAR, topic)
            assert rights.may_subscribe(topic) == mqtt.car_may_subscribe(CAR, topic)


def test_the_platform_reads_every_car_directly_or_in_its_shared_group() -> None:
    rights = platform_permissions()
    assert rights.may_publish(mqtt.desired_topic(CAR))
    assert not rights.may_publish(mqtt.reported_topic(CAR))
    assert rights.may_subscribe(mqtt.shared(mqtt.REPORTED_FILTER))
    assert rights.may_subscribe(mqtt.REPORTED_FILTER)
    assert rights.may_subscribe(mqtt.status_topic(CAR))
    assert not rights.may_subscribe(f"$share/other/{mqtt.REPORTED_FILTER}")
    assert not rights.may_subscribe(mqtt.DESIRED_FILTER)
    assert not rights.may_subscribe("#")
    assert not rights.may_subscribe(f"{mqtt.TOPIC_PREFIX}/#")
    assert rights.may_receive(mqtt.telemetry_topic(CAR))
    assert not rights.may_receive(mqtt.desired_topic(CAR))


def test_topic_matching_follows_mqtt() -> None:
    assert matches("a/+/c", "a/b/c")
    assert matches("a/#", "a")
    assert matches("a/#", "a/b/c")
    assert not matches("a/+", "a/b/c")
    assert not matches("#", "$SYS/uptime")
    assert covers("a/+/c", "a/b/c")
    assert covers("a/#", "a/+/c")
    assert not covers("a/+/c", "a/#")
    assert not covers("a/b/c", "a/+/c")
    assert unshared("$share/caas/a/b") == "a/b"
    assert unshared("a/b") == "a/b"
