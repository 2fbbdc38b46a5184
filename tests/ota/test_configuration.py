"""Configuration versions: signed per car from what the owner is entitled to, strictly increasing,
queued for the car, re-sent while it stays silent, and settled by its answer."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.history import HistoryEntry, subject_history
from caas.core.outbox import OutboxMessage, pending
from caas.core.settings import Settings
from caas.delivery import service as delivery
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial
from caas.ota.publisher import PublishFailed
from caas.ota.rules import add_months
from caas.protocol import mqtt
from caas.protocol.manifest import verify_manifest
from caas.protocol.mqtt import Reported, SignedManifest
from caas.sales.models import Sale
from caas.vehicles.models import PhoneKey, Vehicle
from caas.vehicles.twin import twin_of
from caas.worker import build_relay
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from tests.vehicles.support import (
    FACTORY,
    Car,
    CommittedDatabase,
    born_car,
    committed,
    deliver,
    signing,
    versions,
)

__all__ = ["committed", "signing"]


class RecordingBroker:
    """Stands in for the worker's MQTT bridge: keeps what it was asked to publish."""

    def __init__(self) -> None:
        self.published: list[tuple[str, SignedManifest]] = []
        self.down = False

    def publish_desired(self, vin: str, payload: bytes) -> None:
        if self.down:
            raise PublishFailed("connection refused")
        self.published.append((vin, mqtt.decode(SignedManifest, payload)))

    def versions(self) -> list[int]:
        return [manifest.body.version for _, manifest in self.published]


@pytest.fixture
def car(db: Session, settings: Settings, clock: FixedClock, signing: SigningMaterial) -> Car:
    return born_car(db, settings=settings, now=clock.now())


def report(
    car: Car, version: int, status: str, reason: str | None = None, **extra: object
) -> Reported:
    return Reported.model_validate(
        {
            "vin": car.vin,
            "version": version,
            "status": status,
            "reason": reason,
            "at": datetime(2026, 1, 15, 9, 1, tzinfo=UTC),
            **extra,
        }
    )


def test_a_car_is_born_on_the_network_with_version_1_and_nothing_on(
    db: Session, car: Car, signing: SigningMaterial
) -> None:
    (first,) = versions(db, car).values()
    assert (first.version, first.state, first.reason) == (1, "pending", "car.born")
    manifest = SignedManifest.model_validate(first.manifest)
    body = verify_manifest(
        manifest,
        root_public_key=signing.root_public_key,
        vin=car.vin,
        current_version=0,
        now=first.created_at,
    )
    assert [state.code for state in body.features] == [
        "driver_assist",
        "entertainment",
        "power_boost",
        "winter_traction",
    ]
    assert not any(state.enabled for state in body.features)
    assert body.phone_keys == []
    topics = {message.topic: message for message in pending(db)}
    assert topics["ota.publish"].payload == {"version_id": first.id}
    assert "iot.provision" in topics
    issued = [e for e in subject_history(db, "vehicle", car.vehicle_id) if e.event.startswith("co")]
    assert [(e.event, e.to_state, e.customer_id) for e in issued] == [
        ("configuration.issued", "pending", car.customer_id)
    ]


def test_delivery_switches_the_plans_features_on_for_the_service_period(
    db: Session, car: Car, clock: FixedClock
) -> None:
    sale = db.get_one(Sale, car.sale_id)
    sale.state = "registered"
    delivery.schedule_delivery(
        db,
        sale,
        scheduled_for=clock.now().date(),
        carrier="TransIb",
        actor=FACTORY,
        now=clock.now(),
    )
    delivery.dispatch_delivery(db, sale, tracking_number=None, actor=FACTORY, now=clock.now())
    handed_over = clock.advance(timedelta(hours=3))
    delivery.complete_delivery(db, sale, actor=FACTORY, now=handed_over)

    by_version = versions(db, car)
    assert {v: row.state for v, row in by_version.items()} == {1: "superseded", 2: "pending"}
    body = mqtt.ManifestBody.model_validate(by_version[2].body)
    on = [state for state in body.features if state.enabled]
    assert [state.code for state in on] == ["driver_assist"]
    assert on[0].valid_from == handed_over
    assert on[0].valid_until == add_months(handed_over, 48)
    assert on[0].affects_driving
    assert by_version[2].reason == "delivered"


def test_the_paired_phones_go_into_the_manifest(db: Session, car: Car, clock: FixedClock) -> None:
    key = PhoneKey(
        vehicle_id=car.vehicle_id,
        user_id=car.customer_user_id,
        label="Ana's phone",
        algorithm="Ed25519",
        public_key="11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        created_at=clock.now(),
    )
    db.add(key)
    db.flush()
    version = ota.request_configuration(
        db,
        db.get_one(Vehicle, car.vehicle_id),
        reason="phone.paired",
        actor=FACTORY,
        now=clock.now(),
    )
    body = mqtt.ManifestBody.model_validate(version.body)
    assert [(k.key_id, k.label) for k in body.phone_keys] == [(f"pk-{key.id}", "Ana's phone")]


def test_the_cars_answer_settles_the_version_and_stays_in_its_history(
    db: Session, car: Car, clock: FixedClock
) -> None:
    deliver(db, car, now=clock.now())
    clock.advance(timedelta(seconds=1))
    answered = ota.record_report(
        db, report(car, 2, "deferred", "waiting_to_be_parked"), now=clock.now()
    )
    assert answered is not None and answered.state == "deferred"
    applied_at = clock.advance(timedelta(minutes=5))
    ota.record_report(
        db, report(car, 2, "applied", active_features=["driver_assist"]), now=applied_at
    )
    ota.record_report(
        db, report(car, 2, "applied", active_features=["driver_assist"]), now=applied_at
    )  # a duplicate

    row = versions(db, car)[2]
    assert (row.state, row.reported_at, row.active_features) == (
        "applied",
        applied_at,
        ["driver_assist"],
    )
    moves = [
        (e.event, e.from_state, e.to_state, e.actor_kind)
        for e in subject_history(db, "vehicle", car.vehicle_id)
        if e.event != "configuration.issued" and e.event.startswith("configuration")
    ]
    assert moves == [
        ("configuration.superseded", "pending", "superseded", "factory"),
        ("configuration.deferred", "pending", "deferred", "vehicle"),
        ("configuration.applied", "deferred", "applied", "vehicle"),
    ]


def test_a_window_ended_by_the_cars_own_clock_reaches_the_twin(
    db: Session, car: Car, clock: FixedClock, signing: SigningMaterial
) -> None:
    """The car switches a feature off at the end of its window by its own clock, offline, and
    reports `applied` again for the version it runs with the features now on."""
    agent = VehicleAgent(
        CarIdentity(
            vin=car.vin,
            password=car.password,
            private_key=Ed25519PrivateKey.generate(),
            root_public_key=signing.root_public_key,
        ),
        BrokerEndpoint("127.0.0.1", 1),  # never connected: the car is offline throughout
        now=clock.now,
    )
    delivered = deliver(db, car, now=clock.now())
    first = agent.receive(ota.manifest_payload(delivered))
    assert first is not None and first.active_features == ["driver_assist"]
    ota.record_report(db, first, now=clock.now())
    assert versions(db, car)[2].active_features == ["driver_assist"]

    body = mqtt.ManifestBody.model_validate(delivered.body)
    [window] = [state for state in body.features if state.enabled]
    assert window.valid_until is not None
    clock.advance(window.valid_until - clock.now() + timedelta(minutes=1))
    assert agent.tick()  # the car's clock passed the window's end: off, reported again
    ended = agent.last_report
    assert ended is not None and (ended.version, ended.status) == (2, "applied")
    assert ended.active_features == []

    back_at = clock.advance(timedelta(hours=2))  # the car is back online: its report arrives
    ota.record_report(db, ended, now=back_at)
    ota.record_report(db, ended, now=back_at + timedelta(seconds=1))  # a true duplicate
    row = versions(db, car)[2]
    assert (row.state, row.active_features, row.reported_at) == ("applied", [], back_at)
    changes = [
        (e.event, e.details["version"], e.details["switched_off"], e.details["switched_on"])
        for e in subject_history(db, "vehicle", car.vehicle_id)
        if e.event == "configuration.features_changed"
    ]
    assert changes == [("configuration.features_changed", 2, ["driver_assist"], [])]
    twin = twin_of(db, db.get_one(Vehicle, car.vehicle_id))
    assert twin.reported is not None and twin.reported.active_features == []


def test_a_rejection_keeps_the_cars_reason(db: Session, car: Car, clock: FixedClock) -> None:
    ota.record_report(db, report(car, 1, "rejected", "certificate_expired"), now=clock.now())
    row = versions(db, car)[1]
    assert (row.state, row.report_reason) == ("rejected", "certificate_expired")


def test_a_refused_manifest_the_platform_never_issued_stays_in_the_cars_history(
    db: Session, car: Car, clock: FixedClock
) -> None:
    ota.record_report(db, report(car, 1, "applied"), now=clock.now())
    assert (
        ota.record_report(db, report(car, 77, "rejected", "bad_signature"), now=clock.now()) is None
    )
    ota.record_report(db, report(car, 1, "rejected", "stale_version"), now=clock.now())  # a replay
    refused = db.scalars(
        select(HistoryEntry).where(
            HistoryEntry.subject_id == car.vehicle_id,
            HistoryEntry.event == "configuration.manifest_refused",
        )
    ).all()
    assert [(e.details["version"], e.details["reason"]) for e in refused] == [
        (77, "bad_signature"),
        (1, "stale_version"),
    ]
    assert versions(db, car)[1].state == "applied"


def test_a_stale_version_answer_to_the_newest_version_means_the_car_runs_it(
    db: Session, car: Car, clock: FixedClock
) -> None:
    ota.record_report(db, report(car, 1, "rejected", "stale_version"), now=clock.now())
    assert versions(db, car)[1].state == "applied"


def test_a_silent_car_gets_its_version_again_after_the_resend_interval(
    db: Session, sessions: sessionmaker[Session], settings: Settings, clock: FixedClock, car: Car
) -> None:
    broker = RecordingBroker()
    relay = build_relay(settings, sessions, clock, publisher=broker)
    relay.run_once()
    assert broker.versions() == [1]
    first = versions(db, car)[1]
    assert (first.published_at, first.publish_count) == (clock.now(), 1)

    relay.run_once()
    assert broker.versions() == [1]  # not before the interval
    clock.advance(timedelta(seconds=settings.ota_resend_seconds))
    relay.run_once()
    assert broker.versions() == [1, 1]
    clock.advance(timedelta(seconds=2 * settings.ota_resend_seconds))  # then twice as long
    relay.run_once()
    assert broker.versions() == [1, 1, 1]
    again = versions(db, car)[1]
    assert (again.published_at, again.last_published_at, again.publish_count) == (
        first.published_at,
        clock.now(),
        3,
    )

    ota.record_report(db, report(car, 1, "applied"), now=clock.now())
    db.commit()
    assert not pending(db, "ota.publish")  # the queued re-send is dropped with the answer
    clock.advance(timedelta(hours=2))
    relay.run_once()
    assert broker.versions() == [1, 1, 1]  # answered: never again
    assert not pending(db, "ota.publish")


def test_an_older_version_is_never_published_after_a_newer_one(
    db: Session, sessions: sessionmaker[Session], settings: Settings, clock: FixedClock, car: Car
) -> None:
    deliver(db, car, now=clock.now())
    db.commit()
    broker = RecordingBroker()
    build_relay(settings, sessions, clock, publisher=broker).run_once()
    assert broker.versions() == [2]
    assert [vin for vin, _ in broker.published] == [car.vin]


def test_without_the_broker_the_version_waits_and_is_published_later(
    db: Session, sessions: sessionmaker[Session], settings: Settings, clock: FixedClock, car: Car
) -> None:
    broker = RecordingBroker()
    broker.down = True
    relay = build_relay(settings, sessions, clock, publisher=broker)
    relay.run_once()
    (message,) = pending(db, "ota.publish")
    db.refresh(message)
    assert message.attempts == 1 and "connection refused" in (message.last_error or "")
    assert versions(db, car)[1].published_at is None

    broker.down = False
    clock.advance(timedelta(minutes=1))
    relay.run_once()
    assert broker.versions() == [1]


def test_versions_strictly_increase_under_concurrent_requests(
    committed: CommittedDatabase, settings: Settings, signing: SigningMaterial
) -> None:
    now = datetime.now(UTC)
    car = committed.run(lambda session: born_car(session, settings=settings, now=now))
    requests = 12
    start = threading.Barrier(requests)
    issued: list[int] = []
    failures: list[BaseException] = []

    def request(number: int) -> None:
        try:
            start.wait(timeout=10)

            def act(session: Session) -> int:
                vehicle = session.get_one(Vehicle, car.vehicle_id)
                version = ota.request_configuration(
                    session, vehicle, reason=f"change {number}", actor=FACTORY, now=now
                )
                return version.version

            issued.append(committed.run(act))
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures
    assert sorted(issued) == list(range(2, requests + 2))
    with committed.sessions() as session:
        states = {v: row.state for v, row in versions(session, car).items()}
        published = session.scalars(
            select(OutboxMessage.dedupe_key).where(
                OutboxMessage.topic == "ota.publish",
                OutboxMessage.payload["version_id"]
                .as_integer()
                .in_([row.id for row in versions(session, car).values()]),
            )
        ).all()
    assert states[requests + 1] == "pending"
    assert {state for version, state in states.items() if version <= requests} == {"superseded"}
    assert len(published) == requests + 1  # one publication queued per version
