"""A rollout that asks the owner first: the car gets nothing until its owner accepts in the app
(or the rollout's days without an answer pass); cars awaiting an answer neither hold the next
wave back nor let the rollout complete; a car built while a rollout runs joins its current
wave."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from tests.conftest import SmtpInbox
from tests.releases.conftest import OPERATOR, key
from tests.vehicles.support import Car, born_car, signing
from tests.web.support import log_in, submit, text_of

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.app import create_app
from caas.core.clock import FixedClock
from caas.core.history import HistoryEntry
from caas.core.outbox import Relay
from caas.core.settings import Settings
from caas.notifications.models import Notification
from caas.ota.keys import SigningMaterial
from caas.protocol.mqtt import SoftwareStep
from caas.releases import jobs, service
from caas.releases.models import Rollout, RolloutTarget
from caas.seed import DEMO_PASSWORD
from caas.vehicles.models import Vehicle

__all__ = ["signing"]


@pytest.fixture
def release_settings(smtp: SmtpInbox, tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        database_url="postgresql+psycopg://unused/unused",
        data_dir=tmp_path / "data",
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        public_url="http://testserver",
    )


@pytest.fixture
def client(
    release_settings: Settings,
    sessions: sessionmaker[Session],
    clock: FixedClock,
    signing: SigningMaterial,
) -> Iterator[TestClient]:
    app = create_app(settings=release_settings, sessions=sessions, clock=clock)
    with TestClient(app) as test_client:
        yield test_client


def _login(client: TestClient, email: str) -> None:
    client.post("/api/v1/auth/logout")
    response = client.post("/api/v1/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text


def _owner_email(db: Session, car: Car, clock: FixedClock) -> str:
    user = db.get_one(User, car.customer_user_id)
    user.password_hash = hash_password(DEMO_PASSWORD)
    user.activated_at = clock.now()
    db.commit()
    return user.email


def _cars(
    db: Session, settings: Settings, clock: FixedClock, count: int, version: str
) -> list[Car]:
    cars = [born_car(db, settings=settings, now=clock.now()) for _ in range(count)]
    db.execute(
        update(Vehicle)
        .where(Vehicle.id.in_([car.vehicle_id for car in cars]))
        .values(software_version=version)
    )
    db.commit()
    return sorted(cars, key=lambda car: service.rules.order_key(car.vin))


def _rollout(
    client: TestClient, version: str, min_version: str | None, **terms: Any
) -> dict[str, Any]:
    _login(client, OPERATOR)
    data = {"platform": "AURA", "version": version, "notes": "Faster maps"}
    if min_version:
        data["min_version"] = min_version
    release = client.post(
        "/api/v1/software/releases",
        data=data,
        files={"image": ("image.bin", b"new software" * 100)},
        headers={"Idempotency-Key": key()},
    ).json()
    client.post(
        f"/api/v1/software/releases/{release['id']}/publish", headers={"Idempotency-Key": key()}
    )
    created = client.post(
        f"/api/v1/software/releases/{release['id']}/rollouts",
        json={"success_percent": 100, **terms},
        headers={"Idempotency-Key": key()},
    )
    assert created.status_code == 201, created.text
    client.post("/api/v1/auth/logout")
    return dict(created.json())


def _target(db: Session, rollout_id: int, car: Car) -> RolloutTarget:
    db.expire_all()
    return db.scalars(
        select(RolloutTarget).where(
            RolloutTarget.rollout_id == rollout_id, RolloutTarget.vehicle_id == car.vehicle_id
        )
    ).one()


def _order(db: Session, car: Car, settings: Settings) -> Any:
    return service.software_order(db, db.get_one(Vehicle, car.vehicle_id), settings=settings)


def _step(db: Session, car: Car, release_id: int, step: str, clock: FixedClock) -> None:
    vin = db.get_one(Vehicle, car.vehicle_id).vin
    service.record_step(
        db,
        SoftwareStep(
            vin=vin,
            seq=1,
            at=clock.now(),
            release_id=release_id,
            version="9301.1.0",
            step=step,  # type: ignore[arg-type]
            software_version="9301.1.0",
        ),
        now=clock.now(),
    )
    db.commit()


def test_the_car_gets_the_update_only_once_its_owner_accepts_it(
    client: TestClient, db: Session, release_settings: Settings, clock: FixedClock
) -> None:
    first, second = _cars(db, release_settings, clock, 2, "9301.0.0")
    rollout = _rollout(client, "9301.1.0", "9301.0.0", waves=[50, 100], ask_owner=True)
    assert (rollout["ask_owner"], rollout["auto_install_days"]) == (True, None)
    # Wave 1 (the first car) is asked; asking does not hold the next wave back.
    assert rollout["state"] == "running" and rollout["current_wave"] == 2
    for car in (first, second):
        assert _target(db, rollout["id"], car).state == "awaiting_owner"
        assert _order(db, car, release_settings) is None  # nothing in the car's manifest
        asked = db.scalars(
            select(Notification).where(
                Notification.user_id == car.customer_user_id,
                Notification.kind == "release.update_ask",
            )
        ).all()
        assert len(asked) == 1

    email = _owner_email(db, first, clock)
    vin = db.get_one(Vehicle, first.vehicle_id).vin
    _login(client, email)
    shown = client.get(f"/api/v1/me/vehicles/{vin}/software-update")
    assert shown.status_code == 200, shown.text
    assert shown.json()["version"] == "9301.1.0" and shown.json()["install_by"] is None
    # Another customer cannot see nor accept it.
    other_email = _owner_email(db, second, clock)
    _login(client, other_email)
    assert client.get(f"/api/v1/me/vehicles/{vin}/software-update").status_code == 404
    stolen = client.post(
        f"/api/v1/me/vehicles/{vin}/software-update/accept", headers={"Idempotency-Key": key()}
    )
    assert stolen.status_code == 404
    assert _target(db, rollout["id"], first).state == "awaiting_owner"

    _login(client, email)
    idempotency = key()
    accepted = client.post(
        f"/api/v1/me/vehicles/{vin}/software-update/accept",
        headers={"Idempotency-Key": idempotency},
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["state"] == "offered"
    again = client.post(
        f"/api/v1/me/vehicles/{vin}/software-update/accept",
        headers={"Idempotency-Key": idempotency},
    )
    assert again.json() == accepted.json()  # the retry repeats nothing
    twice = client.post(
        f"/api/v1/me/vehicles/{vin}/software-update/accept", headers={"Idempotency-Key": key()}
    )
    assert (twice.status_code, twice.json()["code"]) == (409, "release.nothing_to_accept")
    target = _target(db, rollout["id"], first)
    assert target.state == "offered" and target.accepted_at == clock.now()
    assert _order(db, first, release_settings) is not None
    assert _order(db, second, release_settings) is None
    accepted_row = db.scalars(
        select(HistoryEntry).where(
            HistoryEntry.subject_id == first.vehicle_id, HistoryEntry.event == "software.accepted"
        )
    ).one()
    assert accepted_row.actor_kind == "customer"

    # Installed on the first car; the rollout waits for the second owner's answer.
    _step(db, first, rollout["release_id"], "installed", clock)
    db.expire_all()
    service.advance_job(db, rollout["id"], now=clock.now())
    db.commit()
    assert db.get_one(Rollout, rollout["id"]).state == "running"


def test_the_owner_accepts_from_the_car_page(
    client: TestClient, db: Session, release_settings: Settings, clock: FixedClock
) -> None:
    (car,) = _cars(db, release_settings, clock, 1, "9302.0.0")
    rollout = _rollout(client, "9302.1.0", "9302.0.0", waves=[100], ask_owner=True)
    email = _owner_email(db, car, clock)
    vin = db.get_one(Vehicle, car.vehicle_id).vin
    log_in(client, email)
    page = client.get(f"/portal/cars/{vin}").text
    assert 'data-software-ask="9302.1.0"' in page
    assert "New software 9302.1.0 available: install now" in text_of(page) or (
        "Nuevo software 9302.1.0 disponible: instálalo ahora" in text_of(page)
    )
    posted = submit(
        client, f"/portal/cars/{vin}", f"/portal/cars/{vin}/software-update", {}, with_key=True
    )
    assert posted.status_code == 303, posted.text
    assert _target(db, rollout["id"], car).state == "offered"
    page = client.get(f"/portal/cars/{vin}").text
    assert "data-software-ask" not in page


def test_without_an_answer_the_car_gets_it_after_the_rollouts_days(
    client: TestClient,
    db: Session,
    sessions: sessionmaker[Session],
    release_settings: Settings,
    clock: FixedClock,
) -> None:
    (car,) = _cars(db, release_settings, clock, 1, "9303.0.0")
    rollout = _rollout(
        client, "9303.1.0", "9303.0.0", waves=[100], ask_owner=True, auto_install_days=3
    )
    relay = Relay(sessions=sessions, clock=clock, handlers=jobs.handlers(clock))
    clock.advance(timedelta(days=2, hours=23))
    relay.run_once()
    assert _target(db, rollout["id"], car).state == "awaiting_owner"
    clock.advance(timedelta(hours=1))
    assert relay.run_once() >= 1
    target = _target(db, rollout["id"], car)
    assert target.state == "offered" and target.accepted_at is None
    assert _order(db, car, release_settings) is not None
    assert db.scalars(
        select(HistoryEntry).where(
            HistoryEntry.subject_id == car.vehicle_id, HistoryEntry.event == "software.unanswered"
        )
    ).one()


def test_days_without_an_answer_only_when_owners_are_asked(
    client: TestClient, db: Session, release_settings: Settings, clock: FixedClock
) -> None:
    _login(client, OPERATOR)
    release = client.post(
        "/api/v1/software/releases",
        data={"platform": "AURA", "version": "9304.1.0", "min_version": "9304.0.0"},
        files={"image": ("image.bin", b"x" * 10)},
        headers={"Idempotency-Key": key()},
    ).json()
    client.post(
        f"/api/v1/software/releases/{release['id']}/publish", headers={"Idempotency-Key": key()}
    )
    refused = client.post(
        f"/api/v1/software/releases/{release['id']}/rollouts",
        json={"auto_install_days": 5},
        headers={"Idempotency-Key": key()},
    )
    assert refused.status_code == 422
    assert refused.json()["field"] == "auto_install_days"
    assert db.scalars(select(Rollout).where(Rollout.release_id == release["id"])).first() is None


def test_a_car_built_while_a_rollout_runs_joins_its_current_wave(
    client: TestClient, db: Session, release_settings: Settings, clock: FixedClock
) -> None:
    # Any AURA car may take it (no minimum); the rollout runs its last wave, a car under way.
    born_car(db, settings=release_settings, now=clock.now())
    db.commit()
    rollout = _rollout(client, "9305.1.0", None, waves=[100])
    db.expire_all()
    assert (rollout["state"], rollout["current_wave"]) == ("running", 1)
    (newborn,) = [born_car(db, settings=release_settings, now=clock.now())]
    db.commit()
    target = _target(db, rollout["id"], newborn)
    assert (target.wave, target.state) == (1, "offered")
    assert _order(db, newborn, release_settings) is not None

    # Paused in its last wave: a car built now does not join (the next rollout takes it).
    _login(client, OPERATOR)
    client.post(
        f"/api/v1/software/rollouts/{rollout['id']}/pause", headers={"Idempotency-Key": key()}
    )
    late = born_car(db, settings=release_settings, now=clock.now())
    db.commit()
    assert (
        db.scalars(
            select(RolloutTarget).where(
                RolloutTarget.rollout_id == rollout["id"],
                RolloutTarget.vehicle_id == late.vehicle_id,
            )
        ).first()
        is None
    )


def test_the_operator_asks_owners_first_from_the_console(
    client: TestClient, db: Session, release_settings: Settings, clock: FixedClock
) -> None:
    (car,) = _cars(db, release_settings, clock, 1, "9306.0.0")
    _login(client, OPERATOR)
    release = client.post(
        "/api/v1/software/releases",
        data={"platform": "AURA", "version": "9306.1.0", "min_version": "9306.0.0"},
        files={"image": ("image.bin", b"x" * 10)},
        headers={"Idempotency-Key": key()},
    ).json()
    client.post(
        f"/api/v1/software/releases/{release['id']}/publish", headers={"Idempotency-Key": key()}
    )
    log_in(client, OPERATOR)
    page = f"/operator/releases/{release['id']}"
    form = {"waves": "100", "success_percent": "90", "failure_percent": "10"}
    posted = submit(
        client,
        page,
        f"{page}/rollouts",
        {**form, "ask_owner": "true", "auto_install_days": "7"},
        with_key=True,
    )
    assert posted.status_code == 303, posted.text
    rollout = db.scalars(select(Rollout).where(Rollout.release_id == release["id"])).one()
    assert (rollout.ask_owner, rollout.auto_install_days) == (True, 7)
    assert _target(db, rollout.id, car).state == "awaiting_owner"
    shown = client.get(posted.headers["location"]).text
    assert "Waiting for the owner" in text_of(shown) or "A la espera del propietario" in text_of(
        shown
    )
