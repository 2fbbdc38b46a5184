"""Background work of rollouts: looking at a rollout again after a car's step."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from caas.core.clock import Clock
from caas.core.outbox import Handler
from caas.releases import service


def handlers(clock: Clock) -> dict[str, Handler]:
    def advance(session: Session, payload: dict[str, Any]) -> None:
        service.advance_job(session, int(payload["rollout_id"]), now=clock.now())

    return {service.ADVANCE_TOPIC: advance}
