"""Background work of notifications: sending queued e-mails over SMTP."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from urllib.parse import urlparse

import aiosmtplib
from sqlalchemy.orm import Session

from caas.core.outbox import Handler
from caas.core.settings import Settings
from caas.notifications.service import EMAIL_TOPIC
from caas.notifications.templates import render


def build_email(settings: Settings, payload: dict[str, Any]) -> EmailMessage:
    message = render(payload["template"], payload["language"], payload["context"])
    email = EmailMessage()
    email["From"] = settings.mail_from
    email["To"] = payload["to"]
    email["Subject"] = message.subject
    email["Message-ID"] = make_msgid(domain="caas.example")
    email["Content-Language"] = payload["language"]
    email.set_content(message.text)
    return email


def send_email(settings: Settings, payload: dict[str, Any]) -> None:
    url = urlparse(settings.smtp_url)
    email = build_email(settings, payload)
    asyncio.run(
        aiosmtplib.send(
            email,
            hostname=url.hostname or "127.0.0.1",
            port=url.port or 25,
            username=url.username,
            password=url.password,
            start_tls=url.scheme == "smtp+starttls",
            use_tls=url.scheme == "smtps",
            timeout=10,
        )
    )


def handlers(settings: Settings) -> dict[str, Handler]:
    def deliver(_: Session, payload: dict[str, Any]) -> None:
        send_email(settings, payload)

    return {EMAIL_TOPIC: deliver}
