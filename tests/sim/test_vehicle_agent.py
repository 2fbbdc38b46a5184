"""The simulated car on a real broker: it applies only what the maker signed for it, newer than
what it runs, all or nothing, at a safe moment; it keeps time offline; the phone is its key."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from caas.core.clock import FixedClock
from caas.iot.local import LocalBroker
from caas.protocol import mqtt
from caas.protocol.manifest import canonical, issue_certificate, sign_manifest
from caas.protocol.mqtt import (
    PhoneKey,
    Reported,
    SignedManifest,
    Status,
    Telemetry,
    UsageEvent,
)
from caas_sim.vehicle.agent import DEFERRED_REASON, BrokerEndpoint, VehicleAgent, detect_protocol
from caas_sim.vehicle.screen import create_app
from tests.mqtt import V5, V311
from tests.sim.conftest import (
    Maker,
    Phone,
    Platform,
    feature,
    fresh_vin,
    new_car,
    new_identity,
    playing_platform,
    running,
)

pytestmark = pytest.mark.anyio


def applied(version: int, *active: str) -> Callable[[Reported], bool]:
    """A report of `version` applied (with exactly the features `active`, when given)."""

    def condition(report: Reported) -> bool:
        return (
            report.status == "applied"
            and report.version == version
            and (not active or report.active_features == sorted(active))
        )

    return condition


def screen(agent: VehicleAgent) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(create_app(agent)), base_url="http://car"
    )


async def test_an_applied_manifest_shows_on_the_cars_screen(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    clock.set(datetime(2026, 1, 15, 9, 0, tzinfo=UTC))
    phone = Phone("pk-1", "Lucía's phone")
    car = new_car(mqtt_broker, maker, clock, model="AURA")
    body = maker.body(
        car.vin,
        1,
        clock.now(),
        features=[
            feature(
                "winter_traction", affects_driving=True, until=datetime(2026, 2, 28, tzinfo=UTC)
            ),
            feature("premium_audio"),
        ],
        phone_keys=[phone.key],
        messages=["Service due in 500 km"],
    )
    async with running(car):
        online = await platform.wait_for(Status, mqtt.STATUS, car.vin, lambda s: s.online)
        await platform.publish(car.vin, maker.sign(body))
        report = await platform.wait_for(Reported, mqtt.REPORTED, car.vin)

        async with screen(car) as client:
            page = (await client.get(f"/cars/{car.vin}")).text
            state = (await client.get(f"/api/cars/{car.vin}")).json()
            fleet_page = (await client.get("/cars")).text

    assert online.software_version == car.software_version
    assert report.status == "applied"
    assert report.version == 1
    assert report.active_features == ["premium_audio", "winter_traction"]
    assert car.version == 1
    assert "Online" in page
    assert "Configuration version 1" in page
    assert "Winter traction active until 28 February" in page
    assert "Service due in 500 km" in page
    assert "Lucía&#39;s phone" in page
    assert state["phones"] == ["Lucía's phone"]
    assert [(f["code"], f["on"]) for f in state["features"]] == [
        ("premium_audio", True),
        ("winter_traction", True),
    ]
    assert car.vin in fleet_page


def _tampered(maker: Maker, car: VehicleAgent, now: datetime, case: str) -> tuple[bytes, str, int]:
    """A manifest an attacker (or a late network) could deliver, the reason it must be rejected
    for, and the version it claims."""
    genuine = maker.body(car.vin, 3, now, features=[feature("autopilot", affects_driving=True)])
    if case == "changed byte":
        payload = maker.sign(genuine).replace(b'"autopilot"', b'"autopilou"')
        return payload, "bad_signature", 3
    if case == "other VIN":
        other = maker.body(fresh_vin(), 3, now, features=genuine.features)
        return maker.sign(other), "wrong_vin", 3
    if case == "replayed version":
        return maker.sign(maker.body(car.vin, 1, now)), "stale_version", 1
    if case == "same version, other content":
        return maker.sign(maker.body(car.vin, 2, now)), "stale_version", 2
    if case == "unknown signer":
        stranger = Ed25519PrivateKey.generate()
        signature = base64.b64encode(stranger.sign(canonical(genuine))).decode()
        forged = SignedManifest(body=genuine, certificate=maker.certificate, signature=signature)
        return mqtt.encode(forged), "bad_signature", 3
    if case == "forged certificate":
        stranger = Ed25519PrivateKey.generate()
        certificate = maker.certificate.model_copy(
            update={
                "public_key": base64.b64encode(stranger.public_key().public_bytes_raw()).decode()
            }
        )
        signed = sign_manifest(genuine, signing_key=stranger, certificate=certificate)
        return mqtt.encode(signed), "bad_certificate", 3
    if case == "another maker's root":
        other_root, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        certificate = issue_certificate(
            other_root,
            stranger.public_key(),
            key_id="impostor",
            not_before=now - timedelta(days=1),
            not_after=now + timedelta(days=1),
        )
        signed = sign_manifest(genuine, signing_key=stranger, certificate=certificate)
        return mqtt.encode(signed), "bad_certificate", 3
    if case == "expired certificate":
        certificate = issue_certificate(
            maker.root,
            maker.signing.public_key(),
            key_id="old",
            not_before=now - timedelta(days=100),
            not_after=now - timedelta(days=10),
        )
        signed = sign_manifest(genuine, signing_key=maker.signing, certificate=certificate)
        return mqtt.encode(signed), "certificate_expired", 3
    assert case == "not JSON"
    return b"\xff not a manifest", "malformed", 0


@pytest.mark.parametrize(
    "case",
    [
        "changed byte",
        "other VIN",
        "replayed version",
        "same version, other content",
        "unknown signer",
        "forged certificate",
        "another maker's root",
        "expired certificate",
        "not JSON",
    ],
)
async def test_a_manifest_the_car_must_not_trust_is_rejected_and_nothing_changes(
    case: str, mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(mqtt_broker, maker, clock)
    current = maker.body(car.vin, 2, clock.now(), features=[feature("premium_audio")])
    payload, reason, claimed = _tampered(maker, car, clock.now(), case)
    async with running(car):
        await platform.publish(car.vin, maker.sign(current))
        await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(2))
        await platform.publish(car.vin, payload, retain=False)
        rejection = await platform.wait_for(
            Reported, mqtt.REPORTED, car.vin, lambda r: r.status == "rejected"
        )

    assert (rejection.reason, rejection.version) == (reason, claimed)
    assert rejection.active_features == ["premium_audio"]
    assert car.version == 2
    assert car.active_features == ["premium_audio"]
    assert car.applied == current


async def test_an_offline_car_gets_the_newest_manifest_when_it_reconnects(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(mqtt_broker, maker, clock)
    async with running(car):
        car.lose_network()
        await platform.wait_for(Status, mqtt.STATUS, car.vin, lambda s: not s.online)
        for version, code in ((1, "premium_audio"), (2, "heated_seats")):
            body = maker.body(car.vin, version, clock.now(), features=[feature(code)])
            await platform.publish(car.vin, maker.sign(body))
        assert car.version == 0

        car.restore_network()
        report = await platform.wait_for(Reported, mqtt.REPORTED, car.vin)

    assert (report.status, report.version, report.active_features) == (
        "applied",
        2,
        ["heated_seats"],
    )
    assert [r.version for r in platform.received(Reported, mqtt.REPORTED, car.vin)] == [2]
    assert car.active_features == ["heated_seats"]


async def test_the_same_manifest_delivered_again_is_acknowledged_not_rejected(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(mqtt_broker, maker, clock)
    body = maker.body(car.vin, 1, clock.now(), features=[feature("premium_audio")])
    async with running(car):
        await platform.publish(car.vin, maker.sign(body))
        await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(1))
        car.lose_network()
        car.restore_network()  # the retained manifest comes again on reconnect
        await car.wait_online()
        await platform.wait_for(
            Reported,
            mqtt.REPORTED,
            car.vin,
            lambda _: len(platform.received(Reported, mqtt.REPORTED, car.vin)) == 2,
        )

    assert [(r.status, r.version) for r in platform.received(Reported, mqtt.REPORTED, car.vin)] == [
        ("applied", 1),
        ("applied", 1),
    ]


async def test_a_window_end_switches_the_feature_off_offline_and_is_reported_after_reconnect(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(mqtt_broker, maker, clock)
    week_end = clock.now() + timedelta(days=2)
    body = maker.body(
        car.vin,
        1,
        clock.now(),
        features=[
            feature("premium_audio", until=week_end),
            feature("lane_assist", affects_driving=True, until=week_end),
            feature("heated_seats"),
        ],
    )
    async with running(car):
        await platform.publish(car.vin, maker.sign(body))
        await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(1))
        car.lose_network()
        await platform.wait_for(Status, mqtt.STATUS, car.vin, lambda s: not s.online)

        car.drive(90, km=30)
        clock.advance(timedelta(days=3))
        assert car.tick()
        moving = car.active_features
        car.park()
        parked = car.active_features
        assert not car.online

        car.restore_network()
        report = await platform.wait_for(
            Reported, mqtt.REPORTED, car.vin, applied(1, "heated_seats")
        )
        async with screen(car) as client:
            state = (await client.get(f"/api/cars/{car.vin}")).json()

    assert moving == ["heated_seats", "lane_assist"]  # a driving feature waits to be parked
    assert parked == ["heated_seats"]
    assert report.at == clock.now()
    assert {f["code"]: f["on"] for f in state["features"]} == {
        "heated_seats": True,
        "lane_assist": False,
        "premium_audio": False,
    }


async def test_a_driving_change_waits_until_the_car_is_parked(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(mqtt_broker, maker, clock)
    first = maker.body(car.vin, 1, clock.now(), features=[feature("premium_audio")])
    boost = maker.body(
        car.vin,
        2,
        clock.now(),
        features=[
            feature("premium_audio"),
            feature("power_boost", affects_driving=True, percent=50),
        ],
    )
    async with running(car):
        await platform.publish(car.vin, maker.sign(first))
        await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(1))
        car.drive(110, km=5)
        await platform.publish(car.vin, maker.sign(boost))
        deferred = await platform.wait_for(
            Reported, mqtt.REPORTED, car.vin, lambda r: r.status == "deferred"
        )
        while_moving = (car.version, car.pending_version, car.active_features)
        async with screen(car) as client:
            page = (await client.get(f"/cars/{car.vin}")).text

        car.park()
        report = await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(2))

    assert (deferred.version, deferred.reason) == (2, DEFERRED_REASON)
    assert deferred.active_features == ["premium_audio"]
    assert while_moving == (1, 2, ["premium_audio"])
    assert "applied when the car is parked" in page
    assert report.active_features == ["power_boost", "premium_audio"]
    assert car.pending_version is None


async def test_a_change_that_does_not_affect_driving_applies_while_moving(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(mqtt_broker, maker, clock)
    driving = feature("lane_assist", affects_driving=True)
    async with running(car):
        await platform.publish(
            car.vin, maker.sign(maker.body(car.vin, 1, clock.now(), features=[driving]))
        )
        await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(1))
        car.drive(50)
        second = maker.body(car.vin, 2, clock.now(), features=[driving, feature("premium_audio")])
        await platform.publish(car.vin, maker.sign(second))
        report = await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(2))

    assert report.active_features == ["lane_assist", "premium_audio"]


async def test_an_unpaired_car_refuses_to_start(maker: Maker, clock: FixedClock) -> None:
    # Never connected: the key needs no network.
    car = VehicleAgent(new_identity(maker), BrokerEndpoint("127.0.0.1", 1), now=clock.now)
    phone = Phone("pk-1", "A stranger's phone")
    async with screen(car) as client:
        nonce = (await client.post(f"/cars/{car.vin}/key/challenge")).json()["nonce"]
        answer = await client.post(
            f"/cars/{car.vin}/key/operate",
            json={"action": "start", "key_id": "pk-1", "signature": phone.sign(nonce)},
        )
        page = (await client.get(f"/cars/{car.vin}")).text

    assert answer.status_code == 403
    assert answer.json()["reason"] == "not_paired"
    assert not car.started
    assert car.locked
    assert "No phone paired" in page


async def test_a_paired_phone_unlocks_the_car_through_its_key_endpoint_even_offline(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(mqtt_broker, maker, clock)
    phone = Phone("pk-1", "Lucía's phone")
    async with running(car):
        await platform.publish(
            car.vin, maker.sign(maker.body(car.vin, 1, clock.now(), phone_keys=[phone.key]))
        )
        await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(1))
        car.lose_network()

        async with screen(car) as client:
            results = []
            for action in ("unlock", "start"):
                nonce = (await client.post(f"/cars/{car.vin}/key/challenge")).json()["nonce"]
                results.append(
                    await client.post(
                        f"/cars/{car.vin}/key/operate",
                        json={
                            "action": action,
                            "key_id": "pk-1",
                            "signature": phone.sign(nonce),
                            "nonce": nonce,
                        },
                    )
                )
            replayed = await client.post(
                f"/cars/{car.vin}/key/operate",
                json={"action": "start", "key_id": "pk-1", "signature": phone.sign(nonce)},
            )

    assert [r.status_code for r in results] == [200, 200]
    assert results[1].json()["started"] is True
    assert not car.locked
    assert car.started
    assert not car.online
    assert replayed.status_code == 403
    assert replayed.json()["reason"] == "no_challenge"


async def test_a_revoked_phone_is_refused_and_the_other_keeps_working(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(mqtt_broker, maker, clock)
    lost, second = Phone("pk-1", "Lost phone"), Phone("pk-2", "Second driver")
    ed25519 = Ed25519PrivateKey.generate()
    ed25519_key = PhoneKey(
        key_id="pk-3",
        algorithm="Ed25519",
        public_key=base64.b64encode(ed25519.public_key().public_bytes_raw()).decode(),
        label="Tablet",
    )
    async with running(car):
        both = maker.body(car.vin, 1, clock.now(), phone_keys=[lost.key, second.key, ed25519_key])
        await platform.publish(car.vin, maker.sign(both))
        await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(1))
        before = car.operate("unlock", "pk-1", lost.sign(car.challenge().nonce))

        revoked = maker.body(car.vin, 2, clock.now(), phone_keys=[second.key, ed25519_key])
        await platform.publish(car.vin, maker.sign(revoked))
        await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(2))

    after = car.operate("start", "pk-1", lost.sign(car.challenge().nonce))
    forged = car.operate("start", "pk-2", lost.sign(car.challenge().nonce))
    nonce = car.challenge().nonce
    tablet = car.operate("unlock", "pk-3", base64.b64encode(ed25519.sign(nonce.encode())).decode())
    genuine = car.operate("start", "pk-2", second.sign(car.challenge().nonce))

    assert before.granted
    assert (after.granted, after.reason) == (False, "key_not_authorised")
    assert (forged.granted, forged.reason) == (False, "bad_signature")
    assert tablet.granted
    assert genuine.granted
    assert [key.label for key in car.phone_keys] == ["Second driver", "Tablet"]


async def test_a_challenge_expires_by_the_cars_clock(maker: Maker, clock: FixedClock) -> None:
    car = VehicleAgent(new_identity(maker), BrokerEndpoint("127.0.0.1", 1), now=clock.now)
    phone = Phone("pk-1", "Phone")
    car.receive(maker.sign(maker.body(car.vin, 1, clock.now(), phone_keys=[phone.key])))
    nonce = car.challenge().nonce
    clock.advance(timedelta(minutes=2))

    answer = car.operate("unlock", "pk-1", phone.sign(nonce))

    assert (answer.granted, answer.reason) == (False, "no_challenge")


async def test_the_last_will_marks_the_car_offline_when_its_connection_drops(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(mqtt_broker, maker, clock)
    async with running(car):
        await platform.wait_for(Status, mqtt.STATUS, car.vin, lambda s: s.online)
        car.lose_network()  # the socket dies: no DISCONNECT, the broker speaks for the car
        will = await platform.wait_for(Status, mqtt.STATUS, car.vin, lambda s: not s.online)
        car.restore_network()
        await car.wait_online()

    statuses = [s.online for s in platform.received(Status, mqtt.STATUS, car.vin)]
    async with playing_platform(mqtt_broker) as later:  # what a platform starting now reads
        retained = await later.wait_for(Status, mqtt.STATUS, car.vin)

    assert not will.online
    assert statuses[:3] == [True, False, True]
    assert not retained.online  # `stop` said goodbye, retained


async def test_usage_of_metered_features_waits_in_the_outbox_while_offline(
    mqtt_broker: LocalBroker, platform: Platform, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(mqtt_broker, maker, clock, odometer_km=1000)
    body = maker.body(
        car.vin,
        1,
        clock.now(),
        features=[
            feature("autopilot", affects_driving=True, metered="km"),
            feature("wifi", metered="hour"),
        ],
    )
    async with running(car):
        await platform.publish(car.vin, maker.sign(body))
        await platform.wait_for(Reported, mqtt.REPORTED, car.vin, applied(1))
        assert await car.send_telemetry()
        # The platform has the car's report, but the car drops it from its outbox only when
        # the broker's PUBACK reaches it: wait for that, or the report is counted below.
        with anyio.fail_after(5):
            while car.outbox_size:
                await anyio.sleep(0.01)  # real concurrency with the broker, not a schedule
        car.lose_network()
        car.drive(100, km=12.5)
        car.drive(100, km=7.5)
        clock.advance(timedelta(minutes=90))
        car.tick()
        assert car.outbox_size == 3
        assert not await car.send_telemetry()  # QoS 0: nothing is kept while offline

        car.restore_network()
        await platform.wait_for(UsageEvent, mqtt.EVENTS, car.vin, lambda e: e.unit == "hour")
        await car.wait_online()
        assert await car.send_telemetry()
        telemetry = await platform.wait_for(
            Telemetry, mqtt.TELEMETRY, car.vin, lambda t: t.odometer_km > 1000
        )

    events = platform.received(UsageEvent, mqtt.EVENTS, car.vin)
    assert [(e.feature, e.unit, e.quantity) for e in events] == [
        ("autopilot", "km", 12.5),
        ("autopilot", "km", 7.5),
        ("wifi", "hour", 1.5),
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len({e.seq for e in events}) == 3
    assert car.outbox_size == 0
    samples = platform.received(Telemetry, mqtt.TELEMETRY, car.vin)
    assert samples[0].seq < samples[-1].seq
    assert (telemetry.odometer_km, telemetry.speed_kmh, telemetry.parked) == (1020, 100, False)


async def test_the_car_speaks_mqtt_3_1_1_with_the_embedded_broker(
    embedded_mqtt_broker: LocalBroker, maker: Maker, clock: FixedClock
) -> None:
    car = new_car(embedded_mqtt_broker, maker, clock, protocol=V311)
    async with playing_platform(embedded_mqtt_broker) as platform, running(car):
        body = maker.body(car.vin, 1, clock.now(), features=[feature("premium_audio")])
        await platform.publish(car.vin, maker.sign(body))
        report = await platform.wait_for(Reported, mqtt.REPORTED, car.vin)

    assert (report.status, report.active_features) == ("applied", ["premium_audio"])


async def test_the_mqtt_version_is_found_out_from_the_broker(
    mqtt_broker: LocalBroker, embedded_mqtt_broker: LocalBroker, maker: Maker, clock: FixedClock
) -> None:
    found = {}
    for broker in (mqtt_broker, embedded_mqtt_broker):
        car = new_car(broker, maker, clock)
        found[broker.kind] = await detect_protocol(
            broker.host, broker.port, username=car.vin, password=car.identity.password
        )

    assert found[mqtt_broker.kind] == (V5 if mqtt_broker.kind == "mosquitto" else V311)
    assert found[embedded_mqtt_broker.kind] == V311
