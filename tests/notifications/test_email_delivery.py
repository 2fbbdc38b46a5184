"""E-mails leave through the outbox over real SMTP: after commit, once, and despite outages."""

from __future__ import annotations

from datetime import timedelta
from email.header import decode_header, make_header
from email.message import Message

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.outbox import OutboxMessage, Relay
from caas.core.settings import Settings
from caas.notifications.jobs import handlers, message_id, send_email
from caas.notifications.models import Notification
from caas.notifications.service import EMAIL_TOPIC, notify_user, queue_email
from caas.sales.service import transition_order
from tests.conftest import SmtpInbox
from tests.factories import salesperson
from tests.files.customers import sold_customer

CONTEXT = {
    "name": "Ana",
    "order_number": "S2026-000007",
    "model": "Aura",
    "dealership": "caas Madrid Castellana",
    "dealership_city": "Madrid",
    "dealership_address": "Paseo de la Castellana 100, 28046 Madrid",
}


def email_relay(settings: Settings, sessions: sessionmaker[Session], clock: FixedClock) -> Relay:
    return Relay(sessions=sessions, clock=clock, handlers=handlers(settings))


def queue_shipped(sessions: sessionmaker[Session], clock: FixedClock, *, commit: bool) -> None:
    with sessions() as session:
        queue_email(
            session,
            to="ana@example.com",
            template="order.shipped",
            language="es",
            context=CONTEXT,
            dedupe_key="order.shipped:7",
            now=clock.now(),
        )
        if commit:
            session.commit()
        else:
            session.rollback()


def subject(mail: Message) -> str:
    return str(make_header(decode_header(mail["Subject"])))


def parts(mail: Message) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in mail.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found[part.get_content_type()] = payload.decode(part.get_content_charset() or "utf-8")
    return found


def test_e_mail_is_multipart_text_and_html_with_a_clickable_portal_link(
    sessions: sessionmaker[Session], settings: Settings, clock: FixedClock, smtp: SmtpInbox
) -> None:
    queue_shipped(sessions, clock, commit=True)
    assert email_relay(settings, sessions, clock).run_once() == 1
    (mail,) = smtp.to("ana@example.com")
    assert mail.is_multipart() and mail.get_content_type() == "multipart/alternative"
    assert subject(mail) == "Pedido S2026-000007: su Aura ha salido de fábrica"
    assert mail["Content-Language"] == "es"
    body = parts(mail)
    assert "http://testserver/portal" in body["text/plain"]
    assert '<a href="http://testserver/portal">' in body["text/html"]
    assert mail["Message-ID"] == message_id("email:order.shipped:7", settings.mail_from)


def test_rolled_back_change_sends_nothing(
    sessions: sessionmaker[Session], settings: Settings, clock: FixedClock, smtp: SmtpInbox
) -> None:
    queue_shipped(sessions, clock, commit=False)
    assert email_relay(settings, sessions, clock).run_once() == 0
    assert smtp.messages == []


def test_the_same_dedupe_key_sends_once(
    sessions: sessionmaker[Session], settings: Settings, clock: FixedClock, smtp: SmtpInbox
) -> None:
    queue_shipped(sessions, clock, commit=True)
    queue_shipped(sessions, clock, commit=True)
    relay = email_relay(settings, sessions, clock)
    relay.run_once()
    clock.advance(timedelta(hours=1))
    relay.run_once()
    assert len(smtp.to("ana@example.com")) == 1


def test_message_committed_while_smtp_is_down_is_delivered_once_it_is_back(
    sessions: sessionmaker[Session], db: Session, settings: Settings, clock: FixedClock
) -> None:
    later = SmtpInbox()  # a real server on a port nobody listens on yet
    down = settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{later.port}"})
    relay = email_relay(down, sessions, clock)
    queue_shipped(sessions, clock, commit=True)
    for _ in range(3):
        assert relay.run_once() == 1
        clock.advance(timedelta(minutes=10))
    message = db.scalars(select(OutboxMessage).where(OutboxMessage.topic == EMAIL_TOPIC)).one()
    db.refresh(message)
    assert message.done_at is None and message.gave_up_at is None
    assert message.attempts == 3 and "SMTP unavailable" in (message.last_error or "")
    later.start()
    try:
        assert relay.run_once() == 1
        clock.advance(timedelta(hours=1))
        assert relay.run_once() == 0
        assert len(later.to("ana@example.com")) == 1
    finally:
        later.stop()


def test_a_re_send_after_a_crash_carries_the_same_message_id(
    settings: Settings, smtp: SmtpInbox
) -> None:
    payload = {
        "to": "ana@example.com",
        "template": "order.paint",
        "language": "en",
        "context": CONTEXT,
        "dedupe_key": "email:order.paint:7",
        "queued_at": "2026-01-15T09:00:00+00:00",
    }
    send_email(settings, payload)
    send_email(settings, payload)  # the worker died before marking the first one done
    first, second = smtp.to("ana@example.com")
    assert first["Message-ID"] == second["Message-ID"]
    assert first["Date"] == "Thu, 15 Jan 2026 09:00:00 +0000"


def test_order_move_notifies_the_customer_in_app_and_by_e_mail_in_their_language(
    sessions: sessionmaker[Session],
    db: Session,
    settings: Settings,
    clock: FixedClock,
    smtp: SmtpInbox,
) -> None:
    sold = sold_customer(db, settings=settings, now=clock.now(), country="ES")
    transition_order(db, sold.sale, "waiting_for_factory", actor=Actor.system(), now=clock.now())
    db.commit()
    (notification,) = db.scalars(
        select(Notification).where(Notification.user_id == sold.user.id)
    ).all()
    assert notification.kind == "order.waiting_for_factory"
    assert notification.title.startswith(f"Pedido {sold.sale.number}")
    email_relay(settings, sessions, clock).run_once()
    subjects = [subject(mail) for mail in smtp.to(sold.email)]
    assert notification.title in subjects


def test_in_app_notification_and_e_mail_are_each_kept_once_per_dedupe_key(
    db: Session, clock: FixedClock
) -> None:
    user = salesperson(db, "ES")
    for _ in range(2):
        notify_user(
            db,
            user_id=user.id,
            email=user.email,
            language="es",
            kind="order.paint",
            context=CONTEXT,
            dedupe_key="order.paint:7:t1",
            now=clock.now(),
        )
    assert len(db.scalars(select(Notification).where(Notification.user_id == user.id)).all()) == 1
    assert (
        len(db.scalars(select(OutboxMessage).where(OutboxMessage.topic == EMAIL_TOPIC)).all()) == 1
    )
