"""A car's signed manifest must fit in one MQTT packet the broker takes (`MAX_PACKET_SIZE`):
the platform refuses to sign one that would not, before writing anything, and gives up
publishing one that no longer fits instead of retrying it forever."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caas.catalog.models import Feature
from caas.core.clock import FixedClock
from caas.core.errors import InvalidInput
from caas.core.history import HistoryEntry, subject_history
from caas.core.outbox import OutboxMessage, pending
from caas.core.settings import Settings
from caas.iot import rules as broker_rules
from caas.ota import pushes
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial
from caas.protocol.manifest import encode_for_wire, publish_packet_size
from caas.protocol.mqtt import desired_topic
from caas.vehicles.models import PhoneKey, Vehicle
from caas.worker import build_relay
from tests.ota.test_configuration import RecordingBroker
from tests.registration.support import login
from tests.security.test_mqtt_probes import _largest_manifest
from tests.vehicles.support import FACTORY, Car, born_car, deliver, signing, versions
from tests.vehicles.test_phone_keys import delivered, p256, pair

__all__ = ["signing"]

# Settings of one feature in the catalog, large enough that no manifest carrying them fits.
OVERSIZED_PARAMETERS = {"notes": "x" * (300 * 1024)}


@pytest.fixture
def car(db: Session, settings: Settings, clock: FixedClock, signing: SigningMaterial) -> Car:
    return born_car(db, settings=settings, now=clock.now())


def give_the_platform_parameters(
    db: Session, vehicle_id: int, parameters: dict[str, object]
) -> None:
    """Every car of the car's platform carries these settings of its first feature."""
    vehicle = db.get_one(Vehicle, vehicle_id)
    feature = db.scalars(
        select(Feature).where(Feature.platform_id == vehicle.platform_id).order_by(Feature.code)
    ).first()
    assert feature is not None
    feature.parameters = parameters
    db.flush()


def history_of(db: Session, car: Car) -> list[HistoryEntry]:
    return [e for e in subject_history(db, "vehicle", car.vehicle_id) if e.event.startswith("co")]


def test_the_packet_counts_the_fixed_header_the_topic_and_the_packet_identifier() -> None:
    topic = desired_topic("VCAAURA02TM000001")
    # 1 (type) + 1 (remaining length) + 2 + len(topic) + 2 (packet id) + 1 (MQTT 5 properties)
    assert publish_packet_size(topic, 10) == 1 + 1 + 2 + len(topic) + 2 + 1 + 10
    # Above 127, 16,383 and 2,097,151 bytes the remaining length takes 2, 3 and 4 bytes.
    assert publish_packet_size(topic, 200) == 1 + 2 + 2 + len(topic) + 2 + 1 + 200
    assert publish_packet_size(topic, 200_000) == 1 + 3 + 2 + len(topic) + 2 + 1 + 200_000
    assert publish_packet_size(topic, 3_000_000) == 1 + 4 + 2 + len(topic) + 2 + 1 + 3_000_000


def test_the_largest_legitimate_manifest_fits(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The manifest at the protocol's bounds (`tests/security`, about 158 KB) is signed and
    published as before."""
    vin = "VCAAURA02TM000001"
    manifest = json.loads(_largest_manifest(vin, tmp_path_factory.mktemp("keys")))
    size = ota.packet_size(vin, encode_for_wire(manifest))
    assert 150_000 < size < broker_rules.MAX_PACKET_SIZE
    assert ota.fits_in_a_packet(size)


def test_a_configuration_too_large_for_the_broker_is_refused_and_nothing_is_written(
    db: Session, car: Car, clock: FixedClock
) -> None:
    give_the_platform_parameters(db, car.vehicle_id, OVERSIZED_PARAMETERS)
    outbox_before = db.scalar(select(func.count()).select_from(OutboxMessage))
    vehicle = db.get_one(Vehicle, car.vehicle_id)

    with pytest.raises(ota.ConfigurationTooLarge) as refused:
        ota.request_configuration(
            db, vehicle, reason="change", actor=FACTORY, now=clock.now() + timedelta(minutes=1)
        )

    error = refused.value.to_dict()
    assert (refused.value.status, error["code"]) == (409, "configuration.too_large")
    assert error["details"]["size"] > error["details"]["limit"] == broker_rules.MAX_PACKET_SIZE
    assert next(iter(error["details"]["parts"])) == "features"  # where the bytes are
    # Version 1 still waits for the car, untouched; no version 2, nothing queued, no history.
    assert {v: row.state for v, row in versions(db, car).items()} == {1: "pending"}
    assert db.scalar(select(func.count()).select_from(OutboxMessage)) == outbox_before
    assert [e.event for e in history_of(db, car)] == ["configuration.issued"]


def test_messages_that_alone_make_it_too_large_are_named_as_the_field_at_fault(
    db: Session, car: Car, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = versions(db, car)[1]
    # Room for the car's configuration as it is, not for a long text besides.
    monkeypatch.setattr(
        broker_rules, "MAX_PACKET_SIZE", ota.packet_size(car.vin, ota.manifest_payload(first)) + 200
    )
    vehicle = db.get_one(Vehicle, car.vehicle_id)

    with pytest.raises(InvalidInput) as refused:
        ota.request_configuration(
            db, vehicle, reason="notice", actor=FACTORY, now=clock.now(), messages=["ñ" * 500]
        )

    assert refused.value.status == 422
    assert (refused.value.field, refused.value.code) == (
        "messages",
        "configuration.messages_too_long",
    )
    assert {v: row.state for v, row in versions(db, car).items()} == {1: "pending"}
    # A short message fits.
    ota.request_configuration(
        db, vehicle, reason="notice", actor=FACTORY, now=clock.now(), messages=["Hello"]
    )
    assert {v: row.state for v, row in versions(db, car).items()} == {
        1: "superseded",
        2: "pending",
    }


def test_pairing_a_phone_with_a_car_whose_configuration_is_too_large_is_a_conflict(
    app_client: TestClient, db: Session, settings: Settings, clock: FixedClock
) -> None:
    order = delivered(db, settings, clock)
    give_the_platform_parameters(db, order.vehicle_id, OVERSIZED_PARAMETERS)
    login(app_client, order.customer_email)

    response = pair(app_client, order.vin, p256()[1])

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "configuration.too_large"
    db.expire_all()
    assert db.scalars(select(PhoneKey).where(PhoneKey.vehicle_id == order.vehicle_id)).all() == []


def test_a_manifest_that_no_longer_fits_is_given_up_not_retried_forever(
    db: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    clock: FixedClock,
    car: Car,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Signed under the old limit, the limit lowered since: the broker would refuse it at
    every attempt."""
    db.commit()
    monkeypatch.setattr(broker_rules, "MAX_PACKET_SIZE", 1024)
    broker = RecordingBroker()
    relay = build_relay(settings, sessions, clock, publisher=broker)

    with structlog.testing.capture_logs() as logs:
        relay.run_once()

    assert broker.published == []
    first = versions(db, car)[1]
    assert (first.state, first.report_reason, first.publish_count) == (
        "rejected",
        "manifest_too_large",
        0,
    )
    assert not pending(db, "ota.publish")  # done: no retry, no re-send queued
    rejected = history_of(db, car)[-1]
    assert (rejected.event, rejected.from_state, rejected.to_state) == (
        "configuration.rejected",
        "pending",
        "rejected",
    )
    assert rejected.details["reason"] == "manifest_too_large"
    assert rejected.details["size"] > rejected.details["limit"] == 1024
    (line,) = [entry for entry in logs if entry["event"] == "ota.publication_refused"]
    assert (line["log_level"], line["vin"], line["version"]) == ("error", car.vin, 1)
    clock.advance(timedelta(hours=2))
    relay.run_once()
    assert broker.published == []


def test_a_large_but_legitimate_configuration_is_signed_and_published(
    db: Session, sessions: sessionmaker[Session], settings: Settings, clock: FixedClock, car: Car
) -> None:
    give_the_platform_parameters(db, car.vehicle_id, {"notes": "x" * (150 * 1024)})
    vehicle = db.get_one(Vehicle, car.vehicle_id)
    ota.request_configuration(db, vehicle, reason="change", actor=FACTORY, now=clock.now())
    db.commit()
    broker = RecordingBroker()

    build_relay(settings, sessions, clock, publisher=broker).run_once()

    assert broker.versions() == [2]
    assert versions(db, car)[2].publish_count == 1


def test_a_fleet_re_sign_leaves_out_the_car_that_does_not_fit_and_signs_the_others(
    db: Session, settings: Settings, clock: FixedClock, signing: SigningMaterial
) -> None:
    big = born_car(db, settings=settings, now=clock.now(), platform="AURA")
    small = born_car(db, settings=settings, now=clock.now(), platform="CIRRUS")
    for car in (big, small):
        deliver(db, car, now=clock.now())
    give_the_platform_parameters(db, big.vehicle_id, OVERSIZED_PARAMETERS)
    later = clock.advance(timedelta(days=1))

    push = pushes.resign_fleet(db, actor=FACTORY, now=later)
    (job,) = [m for m in pending(db, pushes.RESIGN_TOPIC) if m.payload["push_id"] == push.id]
    pushes.resign_batch(db, job.payload, now=later, batch=10_000)

    assert max(versions(db, small)) == 3 and versions(db, small)[3].push_id == push.id
    assert max(versions(db, big)) == 2  # left out, its version 2 untouched
    left_out = [
        e for e in subject_history(db, pushes.SUBJECT, push.id) if e.event.endswith("left_out")
    ]
    assert [e.details["vin"] for e in left_out] == [big.vin]
