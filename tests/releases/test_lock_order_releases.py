"""A transaction that changes several cars takes their rows by id, as the fleet-wide re-sign
(`caas.ota.pushes.resign_batch`), the window sweep and the spending caps do. A rollout's wave
offered its cars in the rollout's order (a hash of the VIN) instead: against a re-sign batch
over the same cars, each held one car the other needed next, and PostgreSQL rolled one back.

The transactions run for real in threads on their own connections, held after their first
car lock until the other holds its own or waits (`tests.store.test_lock_order.FirstLocks`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from tests.releases.conftest import OPERATOR
from tests.store.test_lock_order import CAR_LOCK, FirstLocks
from tests.vehicles.support import Car, CommittedDatabase, born_car, committed, deliver, signing

from caas.accounts.models import User
from caas.catalog.models import Platform
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.ota import pushes
from caas.ota.models import ConfigurationVersion
from caas.releases import service
from caas.releases.models import RolloutTarget
from caas.vehicles.models import Vehicle

__all__ = ["committed", "signing"]

ACTOR = Actor.system("lock-order test")


@pytest.fixture
def release_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path / "data"})


def two_cars(committed: CommittedDatabase, settings: Settings, version: str) -> list[Car]:
    """Two delivered cars running `version` (no other test's car runs it), by id."""
    now = datetime.now(UTC)

    def build(session: Session) -> list[Car]:
        cars = [born_car(session, settings=settings, now=now) for _ in range(2)]
        session.execute(
            update(Vehicle)
            .where(Vehicle.id.in_([car.vehicle_id for car in cars]))
            .values(software_version=version)
        )
        for car in cars:
            deliver(session, car, now=now)
        return sorted(cars, key=lambda car: car.vehicle_id)

    return committed.run(build)


def planned_rollout(
    committed: CommittedDatabase, settings: Settings, cars: list[Car], fleet_version: str
) -> int:
    """A rollout of a new release to exactly these cars in one wave, planned, its order the
    reverse of the cars' ids."""
    now = datetime.now(UTC)
    major = int(fleet_version.split(".")[0])

    def build(session: Session) -> int:
        operator = session.scalars(select(User).where(User.email == OPERATOR)).one()
        platform = session.scalars(select(Platform).where(Platform.code == "AURA")).one()
        release = service.create_release(
            session,
            platform=platform,
            version=f"{major}.1.0",
            notes="Faster maps",
            image=b"new software" * 100,
            compatibility=service.Compatibility(
                models=["AURA"], hardware=[], min_version=fleet_version
            ),
            created_by=operator,
            actor=ACTOR,
            now=now,
            settings=settings,
        )
        service.publish_release(session, release, actor=ACTOR, now=now)
        rollout = service.create_rollout(
            session,
            release,
            waves=[100],
            success_percent=100,
            failure_percent=10,
            start=False,
            created_by=operator,
            actor=ACTOR,
            now=now,
        )
        for rank, car in enumerate(reversed(cars)):
            session.execute(
                update(RolloutTarget)
                .where(
                    RolloutTarget.rollout_id == rollout.id,
                    RolloutTarget.vehicle_id == car.vehicle_id,
                )
                .values(rank=rank)
            )
        return rollout.id

    return committed.run(build)


def newest_versions(committed: CommittedDatabase, cars: list[Car]) -> list[int]:
    def read(session: Session) -> list[int]:
        return [
            session.scalar(
                select(ConfigurationVersion.version)
                .where(ConfigurationVersion.vehicle_id == car.vehicle_id)
                .order_by(ConfigurationVersion.version.desc())
                .limit(1)
            )
            or 0
            for car in cars
        ]

    return committed.run(read)


@pytest.mark.usefixtures("signing")
def test_a_wave_offered_and_a_fleet_re_sign_over_the_same_cars_both_go_through(
    committed: CommittedDatabase, release_settings: Settings, fleet_version: str
) -> None:
    cars = two_cars(committed, release_settings, fleet_version)
    rollout_id = planned_rollout(committed, release_settings, cars, fleet_version)
    before = newest_versions(committed, cars)
    now = datetime.now(UTC) + timedelta(minutes=1)
    push_id = committed.run(
        lambda s: pushes.open_push(s, kind="fleet.resign", label="test", actor=ACTOR, now=now).id
    )
    batch = {
        "push_id": push_id,
        "after": cars[0].vehicle_id - 1,
        "actor": {"kind": ACTOR.kind, "label": ACTOR.label, "user_id": None},
    }

    def offer_the_wave(session: Session) -> str:
        rollout = service.get_rollout(session, rollout_id, lock=True)
        return service.resume_rollout(session, rollout, actor=ACTOR, now=now).state

    locks = FirstLocks(committed, {"wave": CAR_LOCK, "resign": CAR_LOCK})
    locks.all_at_once(
        {
            "wave": offer_the_wave,
            "resign": lambda s: pushes.resign_batch(s, batch, now=now, batch=2),
        }
    )

    assert locks.errors == {}
    assert locks.results == {"wave": "running", "resign": 2}
    # Each car got one version from each.
    assert newest_versions(committed, cars) == [version + 2 for version in before]
