"""What changes a live page without queuing work is announced on `caas_live` at commit: an
order's step (the buyer's order page) and a car's answer (the car's page, its push's page)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy.orm import Session

from caas.core.history import Actor
from caas.core.live import LIVE_CHANNEL
from caas.core.settings import Settings
from caas.ota.keys import SigningMaterial
from caas.sales.models import Sale
from caas.sales.service import transition_order
from tests.store.engine import engine_keys, signing
from tests.vehicles.support import CommittedDatabase, born_car, committed

__all__ = ["committed", "engine_keys", "signing"]


@pytest.fixture
def listener(committed: CommittedDatabase) -> Iterator[psycopg.Connection[object]]:
    url = committed.engine.url.set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f"LISTEN {LIVE_CHANNEL}")
        yield conn


def _heard(listener: psycopg.Connection[object]) -> list[str]:
    return [n.payload for n in listener.notifies(timeout=0.5)]


def test_an_orders_step_is_announced_at_commit_and_a_rollback_says_nothing(
    committed: CommittedDatabase,
    listener: psycopg.Connection[object],
    settings: Settings,
    signing: SigningMaterial,
) -> None:
    now = datetime.now(UTC)
    car = committed.run(lambda session: born_car(session, settings=settings, now=now))
    factory = Actor(kind="factory", label="test")

    def step(session: Session) -> None:
        sale = session.get_one(Sale, car.sale_id)
        transition_order(session, sale, "quality_check", actor=factory, now=now)

    with committed.sessions() as session:  # rolled back: nobody hears of it
        step(session)
        session.flush()
        session.rollback()
    assert f"sale:{car.sale_id}" not in _heard(listener)

    committed.run(step)
    assert f"sale:{car.sale_id}" in _heard(listener)
