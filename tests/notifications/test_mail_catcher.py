"""The demo's mail catcher: the platform's e-mails arrive over SMTP and are read on the web."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from caas.core.net import free_port
from caas.core.settings import Settings
from caas.notifications.jobs import send_email
from caas_sim.mail import MailCatcher, create_app

CONTEXT = {
    "name": "Ana",
    "order_number": "S2026-000009",
    "model": "Boreal",
    "dealership": "caas Porto Boavista",
    "dealership_city": "Porto",
    "dealership_address": "Avenida da Boavista 1000, 4100-113 Porto",
}


def payload(to: str, template: str = "order.at_dealer", language: str = "pt") -> dict[str, object]:
    return {
        "to": to,
        "template": template,
        "language": language,
        "context": CONTEXT,
        "dedupe_key": f"email:{template}:{to}",
    }


@pytest.fixture
def catcher() -> Iterator[MailCatcher]:
    catcher = MailCatcher(host="127.0.0.1", smtp_port=free_port())
    yield catcher
    catcher.stop()


def platform_settings(catcher: MailCatcher) -> Settings:
    return Settings(
        env="test",
        smtp_url=f"smtp://127.0.0.1:{catcher.smtp_port}",
        public_url="http://demo.caas.example",
    )


def test_platform_e_mail_reaches_the_inbox_page_and_the_json_api(catcher: MailCatcher) -> None:
    with TestClient(create_app(catcher)) as web:  # the app's lifespan starts the SMTP server
        send_email(platform_settings(catcher), payload("rui@example.pt"))
        (message,) = web.get("/api/messages").json()
        assert message["to"] == "rui@example.pt"
        assert message["subject"] == "O seu Boreal está disponível em caas Porto Boavista, Porto"
        assert "pague o restante" in message["text"]
        assert message["html"].startswith("<!doctype html>")
        assert message["links"] == ["http://demo.caas.example/portal"]
        inbox = web.get("/").text
        assert "rui@example.pt" in inbox and f'href="/messages/{message["id"]}"' in inbox
        page = web.get(f"/messages/{message['id']}").text
        assert '<a href="http://demo.caas.example/portal" target="_blank"' in page
        assert "<iframe" in page and "srcdoc=" in page
        raw = web.get(f"/messages/{message['id']}.eml")
        assert raw.headers["content-type"] == "message/rfc822"
        assert b"Message-ID:" in raw.content


def test_inbox_filters_by_recipient_and_can_be_emptied(catcher: MailCatcher) -> None:
    with TestClient(create_app(catcher)) as web:
        settings = platform_settings(catcher)
        send_email(settings, payload("one@example.com", "order.paint", "en"))
        send_email(settings, payload("two@example.com", "order.body", "es"))
        (only,) = web.get("/api/messages", params={"to": "two@example.com"}).json()
        assert only["subject"].startswith("Pedido S2026-000009")
        assert len(catcher.to("one@example.com")) == 1
        assert web.get("/api/messages/999").status_code == 404
        assert web.delete("/api/messages").status_code == 204
        assert web.get("/api/messages").json() == []


def test_inbox_kept_in_a_directory_survives_a_restart(tmp_path: Path) -> None:
    first = MailCatcher(smtp_port=free_port(), directory=tmp_path)
    first.start()
    try:
        send_email(platform_settings(first), payload("rui@example.pt"))
    finally:
        first.stop()
    again = MailCatcher(smtp_port=free_port(), directory=tmp_path)
    (message,) = again.messages
    assert message.to == "rui@example.pt" and message.recipients == ("rui@example.pt",)
    assert message.links == ["http://demo.caas.example/portal"]
    kept = again.keep(
        mail_from="a@b.c", recipients=("x@example.com",), raw=b"Subject: hi\r\n\r\nhi"
    )
    assert kept.id == message.id + 1
