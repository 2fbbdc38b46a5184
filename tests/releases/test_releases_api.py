"""The releases API from the outside: only the operator manages releases and rollouts, bad input
names its field, the image goes only to a car offered it, and a car that installed a release
gets the options its new software runs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from tests.conftest import SmtpInbox
from tests.factories import salesperson
from tests.releases.conftest import OPERATOR, key
from tests.vehicles.support import Car, born_car, signing

from caas.accounts.models import User
from caas.accounts.security import hash_password
from caas.app import create_app
from caas.catalog.models import Feature
from caas.catalog.service import get_platform
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.protocol.mqtt import SoftwareStep
from caas.releases import service
from caas.releases.models import RolloutTarget
from caas.sales.models import Customer
from caas.seed import DEMO_PASSWORD
from caas.store.eligibility import refusals
from caas.vehicles.models import Vehicle

__all__ = ["signing"]

OPERATOR_ACTOR = Actor(kind="operator", label=OPERATOR)


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
    response = client.post("/api/v1/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text


def _customer_of(db: Session, car: Car) -> str:
    user = db.get_one(User, car.customer_user_id)
    user.password_hash = hash_password(DEMO_PASSWORD)
    user.activated_at = FixedClock().now()
    db.commit()
    return user.email


def _cars(db: Session, settings: Settings, count: int, version: str) -> list[Car]:
    now = FixedClock().now()
    cars = [born_car(db, settings=settings, now=now) for _ in range(count)]
    db.execute(
        update(Vehicle)
        .where(Vehicle.id.in_([car.vehicle_id for car in cars]))
        .values(software_version=version)
    )
    db.commit()
    return cars


def _upload(client: TestClient, **fields: Any) -> Any:
    return client.post(
        "/api/v1/software/releases",
        data={"platform": "AURA", "version": "9000.1.0", "min_version": "9000.0.0", **fields},
        files={"image": ("image.bin", b"new software" * 100)},
        headers={"Idempotency-Key": key()},
    )


def test_only_the_operator_manages_releases(
    client: TestClient, db: Session, release_settings: Settings
) -> None:
    assert client.get("/api/v1/software/releases").status_code == 401
    (car,) = _cars(db, release_settings, 1, "9000.0.0")
    dealer = salesperson(db).email
    for email in (dealer, "workshop@caas.example", _customer_of(db, car)):
        _login(client, email)
        assert client.get("/api/v1/software/releases").status_code == 403
        assert _upload(client).status_code == 403
        assert client.get("/api/v1/software/rollouts/1").status_code == 403
        client.post("/api/v1/auth/logout")
    _login(client, OPERATOR)
    created = _upload(client)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["state"] == "draft" and body["signature"] is None
    assert body["image_sha256"] == hashlib.sha256(b"new software" * 100).hexdigest()
    assert [r["id"] for r in client.get("/api/v1/software/releases").json()] == [body["id"]]


def test_bad_input_names_its_field_and_changes_nothing(
    client: TestClient, db: Session, release_settings: Settings
) -> None:
    _login(client, OPERATOR)
    bad_version = _upload(client, version="eight")
    assert (bad_version.status_code, bad_version.json()["field"]) == (422, "version")
    bad_hardware = _upload(client, hardware="warp_drive")
    assert (bad_hardware.status_code, bad_hardware.json()["field"]) == (422, "hardware")
    assert client.get("/api/v1/software/releases").json() == []

    release = _upload(client).json()
    assert _upload(client).status_code == 409  # the same version again
    draft_rollout = client.post(
        f"/api/v1/software/releases/{release['id']}/rollouts",
        json={},
        headers={"Idempotency-Key": key()},
    )
    assert draft_rollout.status_code == 409
    assert draft_rollout.json()["code"] == "release.not_published"
    publish_key = key()
    published = client.post(
        f"/api/v1/software/releases/{release['id']}/publish",
        headers={"Idempotency-Key": publish_key},
    )
    assert published.status_code == 200 and published.json()["signature"]
    retried = client.post(
        f"/api/v1/software/releases/{release['id']}/publish",
        headers={"Idempotency-Key": publish_key},
    )
    assert retried.json() == published.json()
    again = client.post(
        f"/api/v1/software/releases/{release['id']}/publish", headers={"Idempotency-Key": key()}
    )
    assert again.status_code == 409
    changed = client.patch(
        f"/api/v1/software/releases/{release['id']}",
        json={"notes": "late"},
        headers={"Idempotency-Key": key()},
    )
    assert changed.status_code == 409
    bad_waves = client.post(
        f"/api/v1/software/releases/{release['id']}/rollouts",
        json={"waves": [10, 50]},
        headers={"Idempotency-Key": key()},
    )
    assert (bad_waves.status_code, bad_waves.json()["field"]) == (422, "waves")
    no_key = client.post(f"/api/v1/software/releases/{release['id']}/rollouts", json={})
    assert no_key.status_code == 422


def test_the_image_goes_only_to_a_car_offered_it_while_its_rollout_runs(
    client: TestClient, db: Session, release_settings: Settings
) -> None:
    offered, other = sorted(
        _cars(db, release_settings, 2, "9100.0.0"), key=lambda car: service.rules.order_key(car.vin)
    )
    _login(client, OPERATOR)
    release = _upload(client, version="9100.1.0", min_version="9100.0.0").json()
    client.post(
        f"/api/v1/software/releases/{release['id']}/publish", headers={"Idempotency-Key": key()}
    )
    rollout = client.post(
        f"/api/v1/software/releases/{release['id']}/rollouts",
        json={"waves": [50, 100], "success_percent": 100},
        headers={"Idempotency-Key": key()},
    ).json()
    assert [wave["cars"] for wave in rollout["waves"]] == [1, 1]
    client.post("/api/v1/auth/logout")

    def image(car: Car, token: str | None = None) -> int:
        token = token or service.image_token(release_settings, release["id"], car.vin)
        response = client.get(
            f"/api/v1/software/releases/{release['id']}/image",
            params={"vin": car.vin, "token": token},
        )
        if response.status_code == 200:
            assert response.content == b"new software" * 100
        return response.status_code

    assert image(offered) == 200
    assert image(offered, token="0" * 64) == 404
    assert image(offered, token="ñ" * 64) == 404  # not ASCII: refused like any other, not a 500
    assert image(other) == 404  # its wave has not started
    # The order in the offered car's manifest points at that very route.
    vehicle = db.get_one(Vehicle, offered.vehicle_id)
    order = service.software_order(db, vehicle, settings=release_settings)
    assert order is not None and order.sha256 == release["image_sha256"]
    assert order.url.startswith(f"/api/v1/software/releases/{release['id']}/image?")

    _login(client, OPERATOR)
    cancelled = client.post(
        f"/api/v1/software/rollouts/{rollout['id']}/cancel", headers={"Idempotency-Key": key()}
    )
    assert cancelled.json()["state"] == "cancelled"
    assert image(offered) == 404
    assert service.software_order(db, vehicle, settings=release_settings) is None


def test_an_option_appears_in_the_store_once_the_car_installed_the_software_it_needs(
    db: Session, release_settings: Settings, signing: SigningMaterial
) -> None:
    now = FixedClock().now()
    (car,) = _cars(db, release_settings, 1, "9200.0.0")
    vehicle = db.get_one(Vehicle, car.vehicle_id)
    customer = db.get_one(Customer, car.customer_id)
    feature = db.scalars(
        select(Feature).where(
            Feature.platform_id == vehicle.platform_id, Feature.code == "power_boost"
        )
    ).one()
    feature.min_software_version = "9200.1.0"
    operator = db.scalars(select(User).where(User.email == OPERATOR)).one()

    def reasons() -> set[str]:
        found = refusals(
            db, vehicle=vehicle, feature=feature, offer=None, customer=customer, at=now
        )
        return {refusal.reason for refusal in found}

    assert "software_too_old" in reasons()
    release = service.create_release(
        db,
        platform=get_platform(db, vehicle.platform_id),
        version="9200.1.0",
        notes="",
        image=b"image",
        compatibility=service.Compatibility(["AURA"], [], "9200.0.0"),
        created_by=operator,
        actor=OPERATOR_ACTOR,
        now=now,
        settings=release_settings,
    )
    service.publish_release(db, release, actor=OPERATOR_ACTOR, now=now)
    rollout = service.create_rollout(
        db,
        release,
        waves=[100],
        success_percent=100,
        failure_percent=0,
        start=True,
        created_by=operator,
        actor=OPERATOR_ACTOR,
        now=now,
    )
    for seq, step in enumerate(("downloading", "installing", "installed"), start=1):
        service.record_step(
            db,
            SoftwareStep(
                vin=car.vin,
                seq=seq,
                at=now,
                release_id=release.id,
                version="9200.1.0",
                step=step,  # type: ignore[arg-type]
                software_version="9200.1.0" if step == "installed" else "9200.0.0",
            ),
            now=now,
        )
    target = db.scalars(select(RolloutTarget).where(RolloutTarget.rollout_id == rollout.id)).one()
    assert target.state == "installed"
    assert vehicle.software_version == "9200.1.0"
    assert "software_too_old" not in reasons()
    service.advance_job(db, rollout.id, now=now)
    assert rollout.state == "completed"
