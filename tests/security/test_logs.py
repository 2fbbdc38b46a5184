"""No secret in any log line: a journey through every secret the platform hands out or takes
(activation link, passwords, the session cookie, a bearer token, a phone's pairing, a car's
broker password, a card and its provider token, a transfer code, and wrong guesses of them),
with every log line of the process captured at DEBUG through the production JSON formatter;
the outbox's jobs (the activation e-mail, the broker's and the factory's deliveries) run too.
Then none of those secrets appears in any line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.seed import DEMO_PASSWORD
from caas.worker import build_relay
from tests.billing.conftest import PaymentSandbox, payment_sandbox, settings
from tests.conftest import SmtpInbox
from tests.factories import sale_payload
from tests.security.authz_world import PHONE_PUBLIC_KEY
from tests.security.conftest import JsonLogs
from tests.store.conftest import delivered_owner, offer
from tests.store.engine import engine_keys, signing

__all__ = ["engine_keys", "payment_sandbox", "settings", "signing"]

CARD = "4242424242424242"
CHOSEN = "my-own-secret-passphrase"


def _activation_token(smtp: SmtpInbox, email: str) -> str:
    body = smtp.text_of(smtp.to(email)[-1])
    found = re.search(r"/activate\?token=([\w-]+)", body)
    assert found is not None, body
    return found.group(1)


def _relay(settings: Settings, sessions: sessionmaker[Session], clock: FixedClock) -> None:
    relay = build_relay(settings, sessions, clock)
    while relay.run_once(limit=200):
        pass


@pytest.fixture
def journey_client(app_client: TestClient) -> Iterator[TestClient]:
    """The application with its cookies forgotten between the journey's people."""
    yield app_client
    app_client.cookies.clear()


def test_no_secret_of_a_customer_journey_reaches_the_logs(
    journey_client: TestClient,
    json_logs: JsonLogs,
    smtp: SmtpInbox,
    settings: Settings,
    sessions: sessionmaker[Session],
    db: Session,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    signing: object,
) -> None:
    client = journey_client
    secrets: dict[str, str] = {"demo password": DEMO_PASSWORD, "chosen password": CHOSEN}

    # A salesperson logs in and sells; the activation e-mail goes out through the relay.
    login = client.post(
        "/api/v1/auth/login", json={"email": "sales.madrid@caas.example", "password": DEMO_PASSWORD}
    )
    assert login.status_code == 200
    secrets["dealer's session cookie"] = client.cookies["caas_session"]
    sale = sale_payload()
    made = client.post("/api/v1/sales", json=sale, headers={"Idempotency-Key": "logs-sale"})
    assert made.status_code == 201, made.text
    client.cookies.clear()
    _relay(settings, sessions, clock)
    email = sale["customer"]["email"]
    token = secrets["activation token"] = _activation_token(smtp, email)

    # A guess, then the customer's own link, on the page and through the API.
    guess = secrets["guessed activation token"] = "Zm9yZ2VkLWFjdGl2YXRpb24tdG9rZW4tZ3Vlc3M"
    wrong = client.post("/api/v1/auth/activate", json={"token": guess, "password": CHOSEN})
    assert wrong.status_code == 422
    assert client.get("/activate", params={"token": token}).status_code == 200
    done = client.post("/api/v1/auth/activate", json={"token": token, "password": CHOSEN})
    assert done.status_code == 200, done.text

    # Logging in: a wrong password, the right one (a cookie), and a bearer token.
    bad = secrets["wrong password"] = "not-my-passphrase-at-all"
    assert (
        client.post("/api/v1/auth/login", json={"email": email, "password": bad}).status_code == 401
    )
    assert (
        client.post("/api/v1/auth/login", json={"email": email, "password": CHOSEN}).status_code
        == 200
    )
    secrets["customer's session cookie"] = client.cookies["caas_session"]
    client.cookies.clear()
    issued = client.post("/api/v1/auth/tokens", json={"email": email, "password": CHOSEN})
    bearer = secrets["bearer token"] = issued.json()["token"]
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {bearer}"}).is_success
    forged = client.get("/api/v1/me", headers={"Authorization": "Bearer forged-token-value-x"})
    assert forged.status_code == 401
    secrets["forged bearer token"] = "forged-token-value-x"

    # A car is born (its broker password issued) and delivered; its owner, with a bearer token,
    # pairs a phone, saves a card, buys an option and opens a transfer.
    owner = delivered_owner(db, settings, clock)
    secrets["car's broker password"] = owner.car.password
    owner_token = client.post(
        "/api/v1/auth/tokens", json={"email": owner.user.email, "password": DEMO_PASSWORD}
    ).json()["token"]
    secrets["owner's bearer token"] = owner_token
    as_owner = {"Authorization": f"Bearer {owner_token}"}

    def command(key: str) -> dict[str, str]:
        return {**as_owner, "Idempotency-Key": key}

    vin = owner.vehicle.vin
    paired = client.post(
        f"/api/v1/vehicles/{vin}/phones",
        json={"public_key": PHONE_PUBLIC_KEY, "label": "Ana's phone"},
        headers=command("logs-phone"),
    )
    assert paired.status_code in (201, 409), paired.text
    card_token = secrets["card token"] = payment_sandbox.token(CARD)
    secrets["card number"] = CARD
    saved = client.post(
        "/api/v1/me/payment-methods", json={"card_token": card_token}, headers=command("logs-card")
    )
    assert saved.status_code == 201, saved.text
    window = offer(db, owner.vehicle, "power_boost", "window", "1M", net_minor=1_000)
    bought = client.post(
        f"/api/v1/vehicles/{vin}/purchases",
        json={"items": [{"offer_id": window.id}], "payment_method": card_token},
        headers=command("logs-buy"),
    )
    assert bought.status_code == 201, bought.text
    transfer = client.post(f"/api/v1/vehicles/{vin}/transfer", headers=command("logs-transfer"))
    assert transfer.status_code == 201, transfer.text
    secrets["transfer code"] = transfer.json()["code"]
    # Someone else guesses the code.
    guessed_code = secrets["guessed transfer code"] = "ZZZZ-ZZZZ"
    stranger = client.post("/api/v1/auth/tokens", json={"email": email, "password": CHOSEN}).json()[
        "token"
    ]
    refused = client.post(
        "/api/v1/transfers/receive",
        json={"vin": vin, "code": guessed_code},
        headers={"Authorization": f"Bearer {stranger}", "Idempotency-Key": "logs-guess"},
    )
    assert refused.status_code >= 400

    # The worker's jobs run: e-mails, the broker's and the factory's deliveries, the manifests.
    _relay(settings, sessions, clock)

    lines = json_logs.lines()
    assert lines, "nothing was logged: the capture does not work"
    assert json_logs.events("auth.login_failed"), "the failures' lines are missing"
    leaked = {
        name: [line for line in lines if value in line]
        for name, value in secrets.items()
        if any(value in line for line in lines)
    }
    assert not leaked, f"secrets in the logs: {leaked}"
    # The platform's records themselves, before the formatter's redaction: no code of ours
    # logs a secret in the first place. (The test's SMTP server, aiosmtpd's `mail.log`, logs
    # the e-mails it receives at DEBUG, links and all: it stands for the outside mail server;
    # its lines are in the check above, where the redaction must have blanked the links.)
    raw = "\n".join(
        str(record.msg) + str(record.args)
        for record in json_logs.caplog.records
        if not record.name.startswith("mail.")
    )
    assert not [name for name, value in secrets.items() if value in raw]


def test_the_redaction_filter_blanks_secrets_a_careless_line_would_carry(
    json_logs: JsonLogs,
) -> None:
    """Belt and braces: a line that names a secret by its key, or carries one in a URL's query
    or an Authorization header, is written without it, for structlog and stdlib loggers alike
    (uvicorn's access log, were it turned on, writes URLs with their query)."""
    structlog.get_logger("caas.test").info(
        "careless.line",
        password="hunter2-secret",
        token="tok_abcdef123456",
        detail="GET /activate?token=zIdIUwn8R05BcHAfL834 HTTP/1.1",
        header="Authorization: Bearer Jx1f0m3wQ6Yb9pVt2LrS",
        note="nothing secret here",
    )
    logging.getLogger("uvicorn.error").warning(
        '127.0.0.1 - "GET /api/v1/software/releases/1/image?vin=VCA&token=abc123def456 HTTP/1.1"'
    )
    text = json_logs.text()
    for secret in (
        "hunter2-secret",
        "tok_abcdef123456",
        "zIdIUwn8R05BcHAfL834",
        "Jx1f0m3wQ6Yb9pVt2LrS",
        "abc123def456",
    ):
        assert secret not in text
    assert "nothing secret here" in text and "vin=VCA" in text
    careless = json_logs.events("careless.line")[0]
    assert careless["password"] == careless["token"] == "[redacted]"
