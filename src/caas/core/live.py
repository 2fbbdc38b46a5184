"""Live signals for open pages: `NOTIFY caas_live` with what changed (`vehicle:12`, `push:3`,
`sale:7`).

The outbox's own NOTIFY (`caas.core.outbox`) only goes out when work is queued; some changes a
live page shows queue nothing (a car applying a plain configuration, a manifest reaching the
broker, a payment failing). Where such a change is stored, `announce` names it, and PostgreSQL
delivers the notification at the transaction's commit (never for a rollback) to the streams of
`caas.web.live`, which read again only when the subject is theirs.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import text
from sqlalchemy.orm import Session

LIVE_CHANNEL: Final = "caas_live"


def announce(session: Session, *subjects: str) -> None:
    """Tell the live pages, at the caller's commit, that each of `subjects` has changed."""
    for subject in subjects:
        session.execute(
            text("SELECT pg_notify(:channel, :subject)"),
            {"channel": LIVE_CHANNEL, "subject": subject},
        )


def vehicle_subjects(vehicle_id: int, push_id: int | None) -> tuple[str, ...]:
    """What a change of a car's configuration version concerns: the car, and its push."""
    if push_id is None:
        return (f"vehicle:{vehicle_id}",)
    return (f"vehicle:{vehicle_id}", f"push:{push_id}")
