"""Background work of notifications: sending queued e-mails over SMTP.

Each e-mail carries a Message-ID derived from its outbox dedupe key: if the worker crashes after
the SMTP server accepted a message but before the outbox row was marked done, the re-send has
the same Message-ID, so mail systems (and people) can recognise the duplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import urlparse

import aiosmtplib
import structlog
from sqlalchemy.orm import Session

from caas.core.outbox import Handler, RetryLater
from caas.core.settings import Settings
from caas.notifications.service import EMAIL_TOPIC
from caas.notifications.templates import render, template_language

log = structlog.get_logger(__name__)


class EmailRejected(Exception):
    """The SMTP server refused the message for good (5xx): retried a few times, then parked."""


def message_id(dedupe_key: str, mail_from: str) -> str:
    """A Message-ID that is the same every time the message with `dedupe_key` is sent."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "caas.example"
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def portal_url(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + "/portal"


def build_email(settings: Settings, payload: dict[str, Any]) -> EmailMessage:
    """The multipart e-mail (plain text plus its HTML alternative) of an outbox payload."""
    template, language = payload["template"], payload["language"]
    message = render(template, language, payload["context"], portal_url=portal_url(settings))
    # Payloads queued before dedupe keys travelled with them still get a stable id.
    key = payload.get("dedupe_key") or json.dumps(payload, sort_keys=True, default=str)
    email = EmailMessage()
    email["From"] = settings.mail_from
    email["To"] = payload["to"]
    email["Subject"] = message.subject
    email["Message-ID"] = message_id(key, settings.mail_from)
    if payload.get("queued_at"):
        email["Date"] = format_datetime(datetime.fromisoformat(payload["queued_at"]))
    email["Auto-Submitted"] = "auto-generated"
    email["X-Caas-Kind"] = template
    email.set_content(message.text)
    email.add_alternative(message.html, subtype="html")
    # After the content: setting the content clears every Content-* header.
    email["Content-Language"] = template_language(template, language)
    return email


def _is_transient(error: Exception) -> bool:
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return all(400 <= refused.code < 500 for refused in error.recipients)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return 400 <= error.code < 500
    return isinstance(error, OSError | TimeoutError | aiosmtplib.SMTPException)


def send_email(settings: Settings, payload: dict[str, Any]) -> None:
    """Send one e-mail; RetryLater while the server is down or answers 4xx."""
    url = urlparse(settings.smtp_url)
    email = build_email(settings, payload)
    try:
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
    except Exception as error:
        if _is_transient(error):
            raise RetryLater(f"SMTP unavailable: {error}") from error
        raise EmailRejected(f"SMTP refused the message: {error}") from error
    log.info("email.sent", to=payload["to"], template=payload["template"], id=email["Message-ID"])


def handlers(settings: Settings) -> dict[str, Handler]:
    def deliver(_: Session, payload: dict[str, Any]) -> None:
        send_email(settings, payload)

    return {EMAIL_TOPIC: deliver}
