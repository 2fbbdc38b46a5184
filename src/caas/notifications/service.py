"""Telling people things: e-mails queued in the caller's transaction and in-app notifications.

An e-mail is an outbox row written with the change that caused it; the relay sends it after
commit (see `jobs.py`), so a rolled-back change sends nothing and the same dedupe key sends once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from caas.core.errors import NotFound
from caas.core.outbox import enqueue
from caas.notifications.models import Notification
from caas.notifications.templates import render

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
    """Send `template` to `to` once the caller commits; the same dedupe key sends once.

    `context` must be JSON-serialisable (it travels through the outbox): pass datetimes as ISO
    strings; the templates' `datetime`/`date` filters format them for the reader.
    """
    key = f"email:{dedupe_key}"
    enqueue(
        session,
        topic=EMAIL_TOPIC,
        payload={
            "to": to,
            "template": template,
            "language": language,
            "context": context,
            "dedupe_key": key,
            "queued_at": now.isoformat(),
        },
        dedupe_key=key,
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


def list_notifications(
    session: Session, *, user_id: int, unread_only: bool = False, limit: int = 50, offset: int = 0
) -> tuple[list[Notification], int, int]:
    """A person's own notifications, newest first, with how many there are and are unread."""
    mine = Notification.user_id == user_id
    query = select(Notification).where(mine)
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    items = session.scalars(
        query.order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit)
        .offset(offset)
    )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    unread = (
        session.scalar(
            select(func.count(Notification.id)).where(mine, Notification.read_at.is_(None))
        )
        or 0
    )
    return list(items), total, unread


def mark_read(
    session: Session, *, user_id: int, notification_id: int, now: datetime
) -> Notification:
    """Mark one of the person's notifications read (again is harmless); another's is 404."""
    notification = session.scalars(
        select(Notification).where(
            Notification.id == notification_id, Notification.user_id == user_id
        )
    ).first()
    if notification is None:
        raise NotFound("no such notification", code="notification.not_found")
    if notification.read_at is None:
        notification.read_at = now
    return notification


def mark_all_read(session: Session, *, user_id: int, now: datetime) -> int:
    """Mark every unread notification of the person read; returns how many changed."""
    result = session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=now)
        .returning(Notification.id)
    )
    return len(result.all())
