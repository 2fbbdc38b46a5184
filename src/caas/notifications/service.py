"""Queue e-mails in the caller's transaction; the outbox relay sends them after commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from caas.core.outbox import enqueue

EMAIL_TOPIC = "email.send"


def queue_email(
    session: Session,
    *,
    to: str,
    template: str,
    language: str,
    context: dict[str, Any],
    dedupe_key: str,
    now: datetime,
) -> None:
    """Send `template` to `to` once the caller commits; the same dedupe key sends once."""
    enqueue(
        session,
        topic=EMAIL_TOPIC,
        payload={"to": to, "template": template, "language": language, "context": context},
        dedupe_key=f"email:{dedupe_key}",
        now=now,
    )
