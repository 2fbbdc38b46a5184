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


def notify_user(
    session: Session,
    *,
    user_id: int,
    email: str,
    language: str,
    kind: str,
    context: dict[str, Any],
    dedupe_key: str,
    now: datetime,
) -> None:
    """Tell a person something: one in-app notification and one e-mail, each at most once.

    `kind` names the template (for example `order.shipped`); the title and body of the in-app
    message are rendered from the same template as the e-mail, in the person's language.
    """
    from sqlalchemy.dialects.postgresql import insert

    from caas.notifications.models import Notification
    from caas.notifications.templates import render

    message = render(kind, language, context)
    session.execute(
        insert(Notification)
        .values(
            user_id=user_id,
            kind=kind,
            title=message.subject,
            body=message.text,
            context=context,
            dedupe_key=dedupe_key,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    queue_email(
        session,
        to=email,
        template=kind,
        language=language,
        context=context,
        dedupe_key=dedupe_key,
        now=now,
    )
