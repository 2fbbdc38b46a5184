"""The operator's configuration pushes: a many-car change groups its versions in one push, the
page counts what became of each car's manifest and drills down per car with filters, and the
counts reach an open page through NOTIFY as soon as a car answers."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.app import create_app
from caas.core.clock import FixedClock, SystemClock
from caas.core.history import Actor
from caas.core.outbox import pending
from caas.core.settings import Settings
from caas.ota import pushes
from caas.ota import service as ota
from caas.ota.keys import SigningMaterial
from caas.ota.models import ConfigurationPush, ConfigurationVersion
from caas.protocol.mqtt import Reported
from caas.releases import service
from caas.releases.models import Rollout
from caas.seed import DEMO_PASSWORD
from caas.store import sweep
from caas.vehicles.models import Vehicle, VehicleState
from caas.web import live
from tests.releases.test_ask_owner import _cars, _rollout, client, release_settings
from tests.servers import serving
from tests.store.engine import Delivered, delivered, engine_keys, give, signing
from tests.vehicles.support import CommittedDatabase, born_car, committed, deliver
from tests.web.support import csrf_token, form_key, log_in, text_of
from tests.web.test_live import WAIT_SECONDS, _events, _logged_in, _next_status

__all__ = ["client", "committed", "delivered", "engine_keys", "release_settings", "signing"]

OPERATOR = "operator@caas.example"
ACTOR = Actor(kind="operator", label=OPERATOR)


def _answer(session: Session, vin: str, version: int, status: str, now: datetime) -> None:
    reported = Reported.model_validate(
        {
            "vin": vin,
            "version": version,
            "status": status,
            "reason": "signature.invalid" if status == "rejected" else None,
            "at": now,
            "active_features": [],
        }
    )
    ota.record_report(session, reported, now=now)


def _push_to(
    session: Session, vehicles: list[Vehicle], now: datetime
) -> tuple[ConfigurationPush, list[ConfigurationVersion]]:
    push = pushes.open_push(session, kind="release.reissue", label="test", actor=ACTOR, now=now)
    versions = [
        ota.request_configuration(
            session, vehicle, reason="test push", actor=ACTOR, now=now, push=push
        )
        for vehicle in vehicles
    ]
    return push, versions


def _delivered_cars(db: Session, settings: Settings, now: datetime, count: int) -> list[Vehicle]:
    cars = []
    for _ in range(count):
        car = born_car(db, settings=settings, now=now)
        deliver(db, car, now=now)
        cars.append(db.get_one(Vehicle, car.vehicle_id))
    return cars


def test_a_push_counts_each_cars_outcome_and_the_pages_show_and_filter_them(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    signing: SigningMaterial,
) -> None:
    now = clock.now()
    applied, rejected, online, replaced, offline = cars = _delivered_cars(db, settings, now, 5)
    push, versions = _push_to(db, cars, now)
    for version in versions[:2]:
        ota.published(db, version, now=now, resend_after=timedelta(minutes=1))
    later = now + timedelta(minutes=1)
    _answer(db, applied.vin, versions[0].version, "applied", later)
    _answer(db, rejected.vin, versions[1].version, "rejected", later)
    db.add(VehicleState(vehicle_id=online.id, online=True))
    ota.request_configuration(db, replaced, reason="one car alone", actor=ACTOR, now=later)
    db.commit()

    progress = pushes.push_progress(db, push.id)
    assert progress is not None
    counts = {name: getattr(progress, name) for name in ("targeted", *pushes.OUTCOMES)}
    assert counts == {
        "targeted": 5,
        "applied": 1,
        "deferred": 0,
        "rejected": 1,
        "superseded": 1,
        "waiting": 1,
        "offline": 1,
    }
    assert (progress.published, progress.open, progress.done) == (2, 2, False)
    assert push.id in [p.id for p in pushes.recent_pushes(db)]
    assert [car.vin for car in pushes.push_cars(db, push.id, outcome="offline")[0]] == [offline.vin]

    log_in(app_client, OPERATOR)
    listing = app_client.get("/operator/pushes")
    assert listing.status_code == 200
    assert 'href="/operator/pushes"' in listing.text  # in the console's menu
    row = listing.text.split(f'data-push="{push.id}"')[1].split("</tr>")[0]
    assert 'data-count="targeted">5<' in row
    assert 'data-count="published">2<' in row
    assert 'data-count="rejected">1<' in row
    assert "2 open" in text_of(row)

    page = app_client.get(f"/operator/pushes/{push.id}")
    assert page.status_code == 200
    assert all(vehicle.vin in page.text for vehicle in cars)
    only_rejected = app_client.get(f"/operator/pushes/{push.id}?outcome=rejected").text
    assert rejected.vin in only_rejected and applied.vin not in only_rejected
    assert "signature.invalid" in only_rejected
    by_vin = app_client.get(f"/operator/pushes/{push.id}?vin={online.vin[-6:].lower()}").text
    assert f'data-vin="{online.vin}" data-outcome="waiting"' in by_vin
    assert applied.vin not in by_vin

    counted = app_client.get(f"/operator/pushes/{push.id}/live").json()
    assert counted["pushes"][0]["superseded"] == 1
    assert app_client.get("/operator/pushes/999999999").status_code == 404


def test_a_window_sweep_pass_is_one_push(
    db: Session, delivered: Delivered, clock: FixedClock
) -> None:
    now = clock.now()
    give(db, delivered, "power_boost", now + timedelta(hours=1), None, now=now)
    db.commit()
    sweep.run_sweep(db, run=0, now=now)
    sweep.run_sweep(db, run=1, now=now + timedelta(hours=2))
    signed = db.scalars(
        select(ConfigurationVersion)
        .where(ConfigurationVersion.vehicle_id == delivered.vehicle.id)
        .order_by(ConfigurationVersion.version.desc())
    ).first()
    assert signed is not None and signed.reason == "window.start"
    assert signed.push_id is not None
    push = db.get_one(ConfigurationPush, signed.push_id)
    assert push.kind == "window.sweep"
    assert (
        pushes.open_push(db, kind="window.sweep", label="again", actor=ACTOR, now=now, key=push.key)
        is push
    )  # a later batch of the same pass joins it


def test_a_cars_answer_reaches_the_open_pages_at_once(
    committed: CommittedDatabase,
    settings: Settings,
    signing: SigningMaterial,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No outbox message is queued by a plain answer: only `caas_live` can wake the streams,
    and their safety re-read is far longer than the test waits."""
    monkeypatch.setattr(live, "RECHECK_SECONDS", 60.0)
    now = datetime.now(UTC)
    car = committed.run(lambda session: born_car(session, settings=settings, now=now))

    def pushed(session: Session) -> tuple[int, int, str]:
        deliver(session, car, now=now)
        vehicle = session.get_one(Vehicle, car.vehicle_id)
        push, versions = _push_to(session, [vehicle], now)
        return push.id, versions[0].version, vehicle.vin

    push_id, version, vin = committed.run(pushed)
    owner_email = committed.run(lambda session: _owner_email(session, car.customer_user_id, now))
    app = create_app(settings=settings, sessions=committed.sessions, clock=SystemClock())

    with (
        serving(app) as server,
        closing(_logged_in(server.url, OPERATOR)) as operator,
        closing(_logged_in(server.url, owner_email)) as owner,
        operator.stream("GET", f"/operator/pushes/{push_id}/events") as push_stream,
        owner.stream("GET", f"/portal/cars/{vin}/events") as car_stream,
    ):
        push_events, car_events = _events(push_stream), _events(car_stream)
        before = _counts(_next_status(push_events))
        assert (before["targeted"], before["applied"], before["done"]) == (1, 0, False)
        assert _next_status(car_events)["pending_version"] == version

        answered_at = datetime.now(UTC)
        committed.run(lambda session: _answer(session, vin, version, "applied", answered_at))

        after = _counts(_next_status(push_events))
        assert (after["applied"], after["done"]) == (1, True)
        car_after = _next_status(car_events)
        assert (car_after["applied_version"], car_after["pending_version"]) == (version, None)
        # Both came well before the safety re-read: woken by the NOTIFY of the answer's commit.
        assert (datetime.now(UTC) - answered_at).total_seconds() < WAIT_SECONDS


def _counts(status: dict[str, object]) -> dict[str, object]:
    """The one push's counts of a pushes stream's status."""
    (counts,) = json.loads(json.dumps(status["pushes"]))
    assert isinstance(counts, dict)
    return counts


def _owner_email(session: Session, user_id: int, now: datetime) -> str:
    user = session.get_one(User, user_id)
    user.password_hash = hash_password(DEMO_PASSWORD)
    user.activated_at = now
    return user.email


def test_a_releases_wave_is_one_push_and_its_cancellation_another(
    client: TestClient, db: Session, release_settings: Settings, clock: FixedClock
) -> None:
    cars = _cars(db, release_settings, clock, 2, "9311.0.0")
    rollout = _rollout(client, "9311.1.0", "9311.0.0", waves=[100])
    db.expire_all()

    def pushed(kind: str) -> list[pushes.PushProgress]:
        return [
            p for p in pushes.recent_pushes(db) if p.kind == kind and str(rollout["id"]) in p.label
        ]

    (wave,) = pushed("release.wave")
    assert "software 9311.1.0" in wave.label
    assert (wave.targeted, wave.offline, wave.applied) == (2, 2, 0)
    vins = {car.vin for car in pushes.push_cars(db, wave.id)[0]}
    assert vins == {db.get_one(Vehicle, car.vehicle_id).vin for car in cars}

    service.cancel_rollout(db, db.get_one(Rollout, rollout["id"]), actor=ACTOR, now=clock.now())
    db.commit()
    (cancelled,) = pushed("release.reissue")
    assert cancelled.targeted == 2
    wave_now = pushes.push_progress(db, wave.id)
    assert wave_now is not None and wave_now.superseded == 2  # replaced before any answer


def test_the_operator_signs_every_delivered_car_anew_as_one_push_in_batches(
    app_client: TestClient,
    db: Session,
    settings: Settings,
    clock: FixedClock,
    signing: SigningMaterial,
) -> None:
    cars = _delivered_cars(db, settings, clock.now(), 3)
    db.commit()
    log_in(app_client, OPERATOR)
    html = app_client.get("/operator/pushes").text
    form = {"csrf_token": csrf_token(html), "idempotency_key": form_key(html)}
    sent = app_client.post("/operator/pushes/resign", data=form, follow_redirects=False)
    assert sent.status_code == 303
    push_id = int(sent.headers["location"].rsplit("/", 1)[1])
    again = app_client.post("/operator/pushes/resign", data=form, follow_redirects=False)
    assert again.headers["location"] == sent.headers["location"]  # a double click: one push
    push = db.get_one(ConfigurationPush, push_id)
    assert (push.kind, push.requested_by) == ("fleet.resign", f"operator:{OPERATOR}")

    def queued() -> list[dict[str, Any]]:
        db.expire_all()
        messages = pending(db, pushes.RESIGN_TOPIC)
        return [m.payload for m in messages if m.payload["push_id"] == push_id]

    (first,) = queued()
    assert first["after"] == 0
    assert pushes.resign_batch(db, first, now=clock.now(), batch=2) == 2
    db.commit()
    (second,) = [payload for payload in queued() if payload["after"] > 0]
    pushes.resign_batch(db, second, now=clock.now(), batch=100_000)
    db.commit()
    assert [payload for payload in queued() if payload["after"] > second["after"]] == []

    resigned = set(
        db.scalars(
            select(ConfigurationVersion.vehicle_id).where(ConfigurationVersion.push_id == push_id)
        )
    )
    assert {car.id for car in cars} <= resigned  # every delivered car, the demo's too
    progress = pushes.push_progress(db, push_id)
    assert progress is not None and progress.targeted == len(resigned)
    # A batch delivered again signs nobody twice.
    assert pushes.resign_batch(db, first, now=clock.now(), batch=100_000) == 0
