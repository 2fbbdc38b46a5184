"""The demo's mail catcher: a real SMTP server (aiosmtpd) whose inbox is a web page and an API.

Everything the platform sends by e-mail lands here instead of a real mailbox. Messages are kept
in memory and, when a directory is given, as `.eml` files there too (so the inbox survives a
restart of the demo). The web app lists them (to, subject, time), shows each one with its text
and HTML bodies and clickable links, and `GET /api/messages` lets tests and the demo read them.
"""

from __future__ import annotations

import html as html_lib
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Annotated, Any

from aiosmtpd.controller import Controller
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, select_autoescape
from markupsafe import Markup, escape
from pydantic import BaseModel, Field

_LINK = re.compile(r"https?://[^\s<>\"']+")
_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_TRAILING = ".,;:!?)"


def _links_in_text(text: str) -> list[str]:
    return [match.group(0).rstrip(_TRAILING) for match in _LINK.finditer(text)]


def _linkify(text: str) -> Markup:
    """Escape `text` and make every URL in it a link that opens in a new tab."""
    parts: list[str] = []
    position = 0
    for match in _LINK.finditer(text):
        url = match.group(0).rstrip(_TRAILING)
        parts.append(escape(text[position : match.start()]))
        parts.append(Markup('<a href="{0}" target="_blank" rel="noopener">{0}</a>').format(url))
        position = match.start() + len(url)
    parts.append(escape(text[position:]))
    return Markup("").join(parts)


@dataclass(frozen=True)
class CaughtMessage:
    """One message as the catcher received it, parsed once."""

    id: int
    received_at: datetime
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    _parsed: EmailMessage = field(repr=False, compare=False)

    @classmethod
    def parse(
        cls,
        number: int,
        received_at: datetime,
        mail_from: str,
        recipients: tuple[str, ...],
        raw: bytes,
    ) -> CaughtMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        return cls(number, received_at, mail_from, recipients, raw, parsed)

    def header(self, name: str) -> str:
        return str(self._parsed.get(name, ""))

    @property
    def headers(self) -> dict[str, str]:
        return {name: str(value) for name, value in self._parsed.items()}

    @property
    def subject(self) -> str:
        return self.header("Subject")

    @property
    def to(self) -> str:
        return self.header("To") or ", ".join(self.recipients)

    def _body(self, subtype: str) -> str | None:
        part = self._parsed.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_subtype() != subtype:
            return None
        content: str = part.get_content()
        return content

    @property
    def text(self) -> str | None:
        return self._body("plain")

    @property
    def html(self) -> str | None:
        return self._body("html")

    @property
    def links(self) -> list[str]:
        """Every link in the message (HTML hrefs first, then URLs in the text), once each."""
        found = [html_lib.unescape(href) for href in _HREF.findall(self.html or "")]
        found += _links_in_text(self.text or "")
        return list(dict.fromkeys(found))

    def is_for(self, address: str) -> bool:
        wanted = address.strip().lower()
        return any(wanted in candidate.lower() for candidate in (self.to, *self.recipients))


class MailCatcher:
    """An SMTP server on `host:smtp_port` that keeps every message it is given."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        smtp_port: int = 1025,
        *,
        directory: Path | None = None,
        max_messages: int = 1000,
    ) -> None:
        self.host = host
        self.smtp_port = smtp_port
        self.directory = directory
        self.max_messages = max_messages
        self._messages: list[CaughtMessage] = []
        self._next_id = 1
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        if directory is not None:
            self._load(directory)

    # --- the SMTP side -------------------------------------------------------------------

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        self.keep(
            mail_from=str(envelope.mail_from or ""),
            recipients=tuple(str(r) for r in envelope.rcpt_tos),
            raw=bytes(raw),
        )
        return "250 Message accepted for delivery"

    def keep(
        self,
        *,
        mail_from: str,
        recipients: tuple[str, ...],
        raw: bytes,
        received_at: datetime | None = None,
    ) -> CaughtMessage:
        """Store one message (what the SMTP handler does for each message it receives)."""
        with self._lock:
            message = CaughtMessage.parse(
                self._next_id, received_at or datetime.now(UTC), mail_from, recipients, raw
            )
            self._next_id += 1
            self._messages.append(message)
            del self._messages[: -self.max_messages]
            if self.directory is not None:
                self._save(message)
            return message

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Start listening (idempotent); returns once the server accepts connections."""
        if self._controller is not None:
            return
        controller = Controller(self, hostname=self.host, port=self.smtp_port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    # --- reading the inbox ---------------------------------------------------------------

    @property
    def messages(self) -> list[CaughtMessage]:
        """Every message kept, oldest first."""
        with self._lock:
            return list(self._messages)

    def to(self, address: str) -> list[CaughtMessage]:
        return [message for message in self.messages if message.is_for(address)]

    def get(self, message_id: int) -> CaughtMessage | None:
        return next((m for m in self.messages if m.id == message_id), None)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            if self.directory is not None:
                for path in self.directory.glob("*.eml"):
                    path.unlink()

    # --- the directory -------------------------------------------------------------------

    def _save(self, message: CaughtMessage) -> None:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        envelope = (
            f"X-Catcher-Received: {message.received_at.isoformat()}\r\n"
            f"X-Catcher-Mail-From: {message.mail_from}\r\n"
            f"X-Catcher-Rcpt-To: {', '.join(message.recipients)}\r\n"
        ).encode()
        (self.directory / f"{message.id:06d}.eml").write_bytes(envelope + message.raw)

    def _load(self, directory: Path) -> None:
        for path in sorted(directory.glob("*.eml")):
            data = path.read_bytes()
            envelope: dict[str, str] = {}
            while data.startswith(b"X-Catcher-"):
                line, _, data = data.partition(b"\r\n")
                name, _, value = line.decode().partition(": ")
                envelope[name] = value
            number = int(path.stem)
            received = envelope.get("X-Catcher-Received")
            rcpt = envelope.get("X-Catcher-Rcpt-To", "")
            self._messages.append(
                CaughtMessage.parse(
                    number,
                    datetime.fromisoformat(received) if received else datetime.now(UTC),
                    envelope.get("X-Catcher-Mail-From", ""),
                    tuple(r for r in rcpt.split(", ") if r),
                    data,
                )
            )
            self._next_id = max(self._next_id, number + 1)


# --- the web side ------------------------------------------------------------------------


class MessageSummary(BaseModel):
    id: int
    received_at: datetime
    mail_from: str = Field(description="Envelope sender")
    to: str = Field(description="The To header")
    recipients: list[str] = Field(description="Envelope recipients")
    subject: str
    message_id: str = Field(description="The Message-ID header")


class MessageRead(MessageSummary):
    text: str | None = Field(description="The text/plain body, if any")
    html: str | None = Field(description="The text/html body, if any")
    links: list[str] = Field(description="Every link in the message, once each")
    headers: dict[str, str]


def _summary(message: CaughtMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "received_at": message.received_at,
        "mail_from": message.mail_from,
        "to": message.to,
        "recipients": list(message.recipients),
        "subject": message.subject,
        "message_id": message.header("Message-ID"),
    }


def _read(message: CaughtMessage) -> MessageRead:
    return MessageRead(
        **_summary(message),
        text=message.text,
        html=message.html,
        links=message.links,
        headers=message.headers,
    )


_pages = Environment(autoescape=select_autoescape(default_for_string=True))
_pages.filters["linkify"] = _linkify

_STYLE = """
body{font-family:system-ui,Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1f2933}
header{background:#1f2933;color:#fff;padding:12px 24px}header a{color:#fff;text-decoration:none}
main{padding:24px;max-width:1100px;margin:0 auto}table{width:100%;border-collapse:collapse;
background:#fff}th,td{text-align:left;padding:8px 12px;border-bottom:1px solid #e4e7eb}
tr:hover td{background:#f0f4f8}a{color:#0b69a3}.muted{color:#7b8794}
pre{white-space:pre-wrap;background:#fff;padding:16px;border-radius:6px}
iframe{width:100%;height:520px;border:1px solid #e4e7eb;background:#fff;border-radius:6px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}dt{font-weight:600}
"""

_INBOX = _pages.from_string(
    """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5"><title>Inbox ({{ messages|length }})</title>
<style>{{ style }}</style></head><body>
<header><a href="/">caas mail catcher</a> · <span class="muted">SMTP on {{ smtp }}</span></header>
<main><h1>Inbox</h1>
<form method="get"><input name="to" value="{{ to or '' }}" placeholder="filter by recipient">
<button>Filter</button></form>
{% if messages %}<table><thead><tr><th>To</th><th>Subject</th><th>Received</th></tr></thead>
<tbody>{% for m in messages %}<tr><td>{{ m.to }}</td>
<td><a href="/messages/{{ m.id }}">{{ m.subject or '(no subject)' }}</a></td>
<td class="muted">{{ m.received_at.strftime('%Y-%m-%d %H:%M:%S') }} UTC</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="muted">No messages yet. This page refreshes by itself.</p>{% endif %}
</main></body></html>"""
)

_MESSAGE = _pages.from_string(
    """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{{ m.subject }}</title><style>{{ style }}</style></head><body>
<header><a href="/">← caas mail catcher</a></header>
<main><h1>{{ m.subject or '(no subject)' }}</h1>
<dl><dt>From</dt><dd>{{ m.header('From') or m.mail_from }}</dd><dt>To</dt><dd>{{ m.to }}</dd>
<dt>Received</dt><dd>{{ m.received_at.strftime('%Y-%m-%d %H:%M:%S') }} UTC</dd>
<dt>Message-ID</dt><dd>{{ m.header('Message-ID') }}</dd></dl>
{% if m.links %}<h2>Links</h2><ul>{% for link in m.links %}
<li><a href="{{ link }}" target="_blank" rel="noopener">{{ link }}</a></li>
{% endfor %}</ul>{% endif %}
{% if m.html %}<h2>HTML</h2><iframe title="HTML body" srcdoc="{{ m.html }}"
 sandbox="allow-popups allow-popups-to-escape-sandbox"></iframe>{% endif %}
{% if m.text %}<h2>Text</h2><pre>{{ m.text | linkify }}</pre>{% endif %}
<p><a href="/messages/{{ m.id }}.eml">Download .eml</a></p>
</main></body></html>"""
)


def create_app(catcher: MailCatcher) -> FastAPI:
    """The inbox web page and JSON API of `catcher`; its SMTP server runs while the app does."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started_here = not catcher.running
        catcher.start()
        try:
            yield
        finally:
            if started_here:
                catcher.stop()

    app = FastAPI(
        title="caas mail catcher",
        description="Every e-mail the demo sends, readable in the browser and over JSON.",
        lifespan=lifespan,
    )

    def _find(message_id: int) -> CaughtMessage:
        message = catcher.get(message_id)
        if message is None:
            raise HTTPException(status_code=404, detail="no such message")
        return message

    @app.get("/", response_class=HTMLResponse, summary="The inbox, newest first")
    def inbox(to: Annotated[str | None, Query(max_length=254)] = None) -> str:
        found = catcher.to(to) if to else catcher.messages
        return _INBOX.render(
            messages=list(reversed(found)),
            to=to,
            smtp=f"{catcher.host}:{catcher.smtp_port}",
            style=_STYLE,
        )

    @app.get("/messages/{message_id}.eml", summary="One message as received (RFC 5322)")
    def raw_message(message_id: int) -> Response:
        return Response(_find(message_id).raw, media_type="message/rfc822")

    @app.get("/messages/{message_id}", response_class=HTMLResponse, summary="One message")
    def message_page(message_id: int) -> str:
        return _MESSAGE.render(m=_find(message_id), style=_STYLE)

    @app.get("/api/messages", response_model=list[MessageRead], summary="Messages, oldest first")
    def list_messages(
        to: Annotated[str | None, Query(max_length=254, description="Only to this address")] = None,
    ) -> list[MessageRead]:
        found = catcher.to(to) if to else catcher.messages
        return [_read(message) for message in found]

    @app.get("/api/messages/{message_id}", response_model=MessageRead, summary="One message")
    def get_message(message_id: int) -> MessageRead:
        return _read(_find(message_id))

    @app.delete("/api/messages", status_code=204, summary="Empty the inbox")
    def clear_messages() -> Response:
        catcher.clear()
        return Response(status_code=204)

    return app
