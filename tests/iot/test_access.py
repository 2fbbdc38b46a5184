"""From real MQTT clients: each car reaches only its own topics, the platform does its job.

Negative checks wait for a sentinel message that the same publisher sends after the forbidden
one (brokers keep one publisher's order), plus a short grace period, never more than 0.5 s.
"""

from __future__ import annotations

import aiomqtt
import pytest

from caas.iot.local import LocalBroker
from caas.protocol import mqtt
from tests.iot.conftest import fresh_vin
from tests.mqtt import car_client, client, connect_and_vanish, messages_within, service_client

pytestmark = pytest.mark.anyio

Wire = tuple[LocalBroker, aiomqtt.ProtocolVersion]
GRACE = 0.2


def refused(granted: object) -> bool:
    """Whether a SUBACK refused every filter (0x80 in 3.1.1, a reason code >= 0x80 in 5)."""
    assert isinstance(granted, list | tuple)
    return all(code.is_failure for code in granted)


async def test_a_wrong_password_is_refused(wire: Wire) -> None:
    broker, protocol = wire
    vin = fresh_vin()
    broker.add_car(vin)
    with pytest.raises(aiomqtt.MqttCodeError):
        async with car_client(broker, vin, "not-the-password", protocol=protocol):
            pass


async def test_an_unknown_car_and_an_anonymous_client_are_refused(wire: Wire) -> None:
    broker, protocol = wire
    with pytest.raises(aiomqtt.MqttCodeError):
        async with car_client(broker, fresh_vin(), "whatever", protocol=protocol):
            pass
    with pytest.raises(aiomqtt.MqttCodeError):
        async with client(broker, None, None, protocol=protocol):
            pass


async def test_a_car_cannot_connect_under_another_cars_client_id(wire: Wire) -> None:
    broker, protocol = wire
    car_a, car_b = fresh_vin(), fresh_vin()
    password_a = broker.add_car(car_a)
    broker.add_car(car_b)
    with pytest.raises(aiomqtt.MqttCodeError):
        async with client(broker, car_a, password_a, identifier=car_b, protocol=protocol):
            pass


async def test_a_refused_client_with_a_cars_client_id_does_not_disturb_the_car(wire: Wire) -> None:
    broker, protocol = wire
    vin = fresh_vin()
    password = broker.add_car(vin)
    async with (
        service_client(broker, protocol=protocol) as platform,
        car_client(broker, vin, password, protocol=protocol) as car,
    ):
        await car.subscribe(mqtt.desired_topic(vin), qos=1)
        with pytest.raises(aiomqtt.MqttCodeError):
            async with car_client(broker, vin, "a guess", protocol=protocol):
                pass
        await platform.publish(mqtt.desired_topic(vin), b"still reaches the car", qos=1)
        received = await messages_within(car, 2, until_topic=mqtt.desired_topic(vin))
    assert [m.payload for m in received] == [b"still reaches the car"]


async def test_a_car_cannot_read_another_cars_configuration(wire: Wire) -> None:
    broker, protocol = wire
    car_a, car_b = fresh_vin(), fresh_vin()
    password_a = broker.add_car(car_a)
    broker.add_car(car_b)
    async with (
        service_client(broker, protocol=protocol) as platform,
        car_client(broker, car_a, password_a, protocol=protocol) as car,
    ):
        await platform.publish(
            mqtt.desired_topic(car_b), b"B's retained manifest", qos=1, retain=True
        )
        assert refused(await car.subscribe(mqtt.desired_topic(car_b), qos=1))
        assert refused(await car.subscribe(mqtt.DESIRED_FILTER, qos=1))
        assert refused(await car.subscribe("#", qos=1))
        assert not refused(await car.subscribe(mqtt.desired_topic(car_a), qos=1))

        await platform.publish(mqtt.desired_topic(car_b), b"B's next manifest", qos=1)
        await platform.publish(mqtt.desired_topic(car_a), b"A's manifest", qos=1)
        received = await messages_within(car, 2, until_topic=mqtt.desired_topic(car_a))
        received += await messages_within(car, GRACE)

    assert [(m.topic.value, m.payload) for m in received] == [
        (mqtt.desired_topic(car_a), b"A's manifest")
    ]


async def test_a_connecting_car_gets_no_other_cars_retained_messages(wire: Wire) -> None:
    broker, protocol = wire
    car_a, car_b = fresh_vin(), fresh_vin()
    password_a, password_b = broker.add_car(car_a), broker.add_car(car_b)
    async with (
        service_client(broker, protocol=protocol) as platform,
        car_client(broker, car_b, password_b, protocol=protocol) as other_car,
    ):
        await platform.subscribe(mqtt.STATUS_FILTER, qos=1)
        await other_car.subscribe(mqtt.desired_topic(car_b), qos=1)
        await other_car.publish(mqtt.status_topic(car_b), b"B online", qos=1, retain=True)
        await platform.publish(mqtt.desired_topic(car_b), b"B's manifest", qos=1, retain=True)
        await platform.publish(mqtt.desired_topic(car_a), b"A's manifest", qos=1, retain=True)
        async with car_client(broker, car_a, password_a, protocol=protocol) as car:
            await car.subscribe(mqtt.desired_topic(car_a), qos=1)
            received = await messages_within(car, 2, until_topic=mqtt.desired_topic(car_a))
            received += await messages_within(car, GRACE)
        for topic in (mqtt.desired_topic(car_a), mqtt.desired_topic(car_b)):
            await platform.publish(topic, b"", qos=1, retain=True)
        await other_car.publish(mqtt.status_topic(car_b), b"", qos=1, retain=True)

    assert [(m.topic.value, m.payload) for m in received] == [
        (mqtt.desired_topic(car_a), b"A's manifest")
    ]


async def test_a_car_cannot_publish_as_another_car(wire: Wire) -> None:
    broker, protocol = wire
    car_a, car_b = fresh_vin(), fresh_vin()
    password_a = broker.add_car(car_a)
    broker.add_car(car_b)
    async with service_client(broker, protocol=protocol) as platform:
        for topic_filter in (mqtt.REPORTED_FILTER, mqtt.STATUS_FILTER, mqtt.EVENTS_FILTER):
            await platform.subscribe(topic_filter, qos=1)
        await platform.subscribe(mqtt.TELEMETRY_FILTER, qos=0)
        async with car_client(broker, car_a, password_a, protocol=protocol) as car:
            for topic in (
                mqtt.reported_topic(car_b),
                mqtt.status_topic(car_b),
                mqtt.telemetry_topic(car_b),
                mqtt.events_topic(car_b),
                mqtt.desired_topic(car_b),  # the platform's topic, not a car's
                mqtt.desired_topic(car_a),
            ):
                await car.publish(topic, b"forged", qos=1)
            await car.publish(mqtt.reported_topic(car_a), b"genuine", qos=1)
            received = await messages_within(platform, 2, until_topic=mqtt.reported_topic(car_a))
            received += await messages_within(platform, GRACE)

    assert [(m.topic.value, m.payload) for m in received] == [
        (mqtt.reported_topic(car_a), b"genuine")
    ]


async def test_a_car_publishes_to_its_own_topics_and_gets_its_retained_configuration(
    wire: Wire,
) -> None:
    broker, protocol = wire
    vin = fresh_vin()
    password = broker.add_car(vin)
    async with service_client(broker, protocol=protocol) as platform:
        await platform.publish(mqtt.desired_topic(vin), b"manifest v1", qos=1, retain=True)
        await platform.subscribe(mqtt.shared(mqtt.REPORTED_FILTER), qos=1)
        await platform.subscribe(mqtt.shared(mqtt.EVENTS_FILTER), qos=1)
        await platform.subscribe(mqtt.shared(mqtt.STATUS_FILTER), qos=1)
        await platform.subscribe(mqtt.shared(mqtt.TELEMETRY_FILTER), qos=0)
        async with car_client(broker, vin, password, protocol=protocol) as car:
            await car.subscribe(mqtt.desired_topic(vin), qos=1)
            [manifest] = await messages_within(car, 2, until_topic=mqtt.desired_topic(vin))
            await car.publish(mqtt.telemetry_topic(vin), b"telemetry", qos=0)
            await car.publish(mqtt.events_topic(vin), b"event", qos=1)
            await car.publish(mqtt.status_topic(vin), b"online", qos=1, retain=True)
            await car.publish(mqtt.reported_topic(vin), b"applied v1", qos=1)
            received = await messages_within(platform, 2, until_topic=mqtt.reported_topic(vin))
        await platform.publish(mqtt.desired_topic(vin), b"", qos=1, retain=True)  # clean up

    assert manifest.payload == b"manifest v1"
    assert manifest.retain
    assert {(m.topic.value, m.payload) for m in received if mqtt.vin_of(m.topic.value) == vin} == {
        (mqtt.telemetry_topic(vin), b"telemetry"),
        (mqtt.events_topic(vin), b"event"),
        (mqtt.status_topic(vin), b"online"),
        (mqtt.reported_topic(vin), b"applied v1"),
    }


async def test_a_cars_last_will_cannot_speak_for_another_car(wire: Wire) -> None:
    broker, protocol = wire
    car_a, car_b = fresh_vin(), fresh_vin()
    password_a = broker.add_car(car_a)
    broker.add_car(car_b)
    async with service_client(broker, protocol=protocol) as platform:
        await platform.subscribe(mqtt.STATUS_FILTER, qos=1)
        # Mosquitto accepts the connection and drops the forbidden will; amqtt refuses it.
        connect_and_vanish(
            broker,
            username=car_a,
            password=password_a,
            identifier=car_a,
            will_topic=mqtt.status_topic(car_b),
            will_payload=b"B is offline (forged)",
        )
        accepted = connect_and_vanish(
            broker,
            username=car_a,
            password=password_a,
            identifier=car_a,
            will_topic=mqtt.status_topic(car_a),
            will_payload=b"A is offline",
        )
        received = await messages_within(platform, 2, until_topic=mqtt.status_topic(car_a))
        received += await messages_within(platform, GRACE)

    assert accepted == 0
    mine = [
        (m.topic.value, m.payload) for m in received if mqtt.vin_of(m.topic.value) in (car_a, car_b)
    ]
    assert mine == [(mqtt.status_topic(car_a), b"A is offline")]


async def test_the_platform_account_cannot_pose_as_a_car_nor_read_everything(wire: Wire) -> None:
    broker, protocol = wire
    vin = fresh_vin()
    broker.add_car(vin)
    async with service_client(broker, protocol=protocol) as platform:
        assert refused(await platform.subscribe("#", qos=1))
        assert refused(await platform.subscribe(mqtt.desired_topic(vin), qos=1))
        assert refused(await platform.subscribe("$share/other/" + mqtt.REPORTED_FILTER, qos=1))
        await platform.subscribe(mqtt.REPORTED_FILTER, qos=1)
        await platform.publish(mqtt.reported_topic(vin), b"forged by the platform", qos=1)
        await platform.publish(mqtt.desired_topic(vin), b"", qos=1)  # allowed: the sentinel
        received = await messages_within(platform, GRACE)
    assert received == []


async def test_a_new_password_replaces_the_old_one(wire: Wire) -> None:
    broker, protocol = wire
    vin = fresh_vin()
    old = broker.add_car(vin)
    new = broker.add_car(vin)  # provisioning again (a retry) resets the password
    with pytest.raises(aiomqtt.MqttCodeError):
        async with car_client(broker, vin, old, protocol=protocol):
            pass
    async with car_client(broker, vin, new, protocol=protocol):
        pass
    broker.admin().set_password(vin, "rotated-password")
    async with car_client(broker, vin, "rotated-password", protocol=protocol):
        pass


async def test_a_removed_car_cannot_connect(wire: Wire) -> None:
    broker, protocol = wire
    vin = fresh_vin()
    password = broker.add_car(vin)
    broker.admin().remove_car(vin)
    broker.admin().remove_car(vin)  # removing twice is harmless
    with pytest.raises(aiomqtt.MqttCodeError):
        async with car_client(broker, vin, password, protocol=protocol):
            pass
