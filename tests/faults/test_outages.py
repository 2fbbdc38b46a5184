"""The factory simulator and the SMTP server down for a while: the worker's relay keeps the
factory orders and the e-mails queued and retries them with growing delays (the clock is moved
past each delay, nothing sleeps); once both are back every order reaches the factory and every
e-mail its reader exactly once, and later runs send nothing more."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.net import free_port
from caas.core.outbox import OutboxMessage, Relay
from caas.core.settings import Settings
from caas.factory.service import PLACE_ORDER_TOPIC
from caas.notifications.service import EMAIL_TOPIC
from caas.sales.models import Customer, Sale
from caas.sales.schemas import CommercialPlan, CustomerIdentity
from caas.sales.service import create_sale, deposit_captured
from caas.worker import build_relay
from caas_sim.factory import create_app
from tests.factories import customer_payload, salesperson
from tests.faults.processes import RestartableSmtp
from tests.servers import ServerThread
from tests.vehicles.support import CommittedDatabase, fresh_dni

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FACTORY_KEY = "faults-factory-key"
FACTORY_SECRET = "faults-factory-secret"
SALES = 3
DOWN_ROUNDS = 3


class Factory:
    """The factory simulator as a service that stops and starts again on its port, keeping
    its orders on disk (`state_file`) like the real one across a restart."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.port = free_port()
        self.server: ServerThread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        app = create_app(
            webhook_url=f"http://127.0.0.1:{free_port()}/events",  # the platform is not asked
            webhook_secret=FACTORY_SECRET,
            api_key=FACTORY_KEY,
            auto_advance=False,
            state_file=self.state_file,
            retry_base_seconds=60,
        )
        self.server = ServerThread(app, self.port)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def orders(self) -> list[str]:
        response = httpx.get(f"{self.url}/sim/orders", timeout=10)
        response.raise_for_status()
        return [order["order_id"] for order in response.json()]


def _sale(session: Session, settings: Settings, now: datetime) -> tuple[str, str]:
    """A sale whose deposit is captured: its factory order and the customer's e-mails are
    queued. Its number (the factory's order id) and the customer's address."""
    sale = create_sale(
        session,
        salesperson=salesperson(session, "ES"),
        identity=CustomerIdentity(**customer_payload("ES", national_id=fresh_dni())),
        plan=CommercialPlan(
            platform="AURA",
            features=["driver_assist"],
            service_period_months=48,
            maintenance_included=True,
        ),
        settings=settings,
        now=now,
    )
    deposit_captured(session, sale, actor=Actor(kind="provider", label="faults"), now=now)
    return sale.number, session.get_one(Customer, sale.customer_id).email


def _queued(database: CommittedDatabase, since: datetime) -> list[OutboxMessage]:
    """The orders and e-mails this test queued (its clock is months behind the others')."""

    def read(session: Session) -> list[OutboxMessage]:
        return list(
            session.scalars(
                select(OutboxMessage)
                .where(
                    OutboxMessage.topic.in_([PLACE_ORDER_TOPIC, EMAIL_TOPIC]),
                    OutboxMessage.created_at >= since,
                    OutboxMessage.created_at < since + timedelta(days=1),
                )
                .order_by(OutboxMessage.id)
            )
        )

    return database.run(read)


def _run(relay: Relay) -> int:
    """The relay delivers everything due now, as the worker does between two waits."""
    total = 0
    while handled := relay.run_once():
        total += handled
    return total


def test_factory_and_smtp_down_for_a_while(
    database: CommittedDatabase, settings: Settings, tmp_path: Path
) -> None:
    clock = FixedClock()
    since = clock.now()
    factory = Factory(tmp_path / "factory.json")
    mail = RestartableSmtp()
    settings = settings.model_copy(
        update={
            "smtp_url": mail.url,
            "factory_url": factory.url,
            "factory_api_key": FACTORY_KEY,
            "factory_webhook_secret": FACTORY_SECRET,
            "mqtt_url": None,
        }
    )
    relay = build_relay(settings, database.sessions, clock)
    factory.start()
    mail.start()
    factory.stop()
    mail.stop()
    try:
        sold = [database.run(lambda s: _sale(s, settings, clock.now())) for _ in range(SALES)]

        # Down for a while: every try fails and is put off, longer each time; none is dropped.
        for round_number in range(1, DOWN_ROUNDS + 1):
            assert _run(relay) > 0
            queued = _queued(database, since)
            assert {m.topic for m in queued} == {PLACE_ORDER_TOPIC, EMAIL_TOPIC}
            for message in queued:
                assert message.done_at is None and message.gave_up_at is None, message.topic
                assert message.attempts == round_number, (message.topic, message.attempts)
            clock.set(max(message.run_after for message in queued))
        assert mail.messages == []

        factory.start()
        mail.start()
        clock.advance(timedelta(minutes=10))
        _run(relay)

        queued = _queued(database, since)
        assert all(message.done_at is not None for message in queued), [
            (m.topic, m.last_error) for m in queued if m.done_at is None
        ]
        # Every order reached the factory once, and every sale knows it was ordered.
        orders = factory.orders()
        numbers = [number for number, _ in sold]
        assert sorted(o for o in orders if o in numbers) == sorted(numbers)

        def states(session: Session) -> list[tuple[str, str | None]]:
            return [
                (sale.state, sale.factory_order_ref)
                for sale in session.scalars(select(Sale).where(Sale.number.in_(numbers)))
            ]

        for state, reference in database.run(states):
            assert state == "ordered" and reference, (state, reference)
        # Every e-mail arrived, once.
        emails = [m for m in queued if m.topic == EMAIL_TOPIC]
        assert len(mail.messages) == len(emails) > 0
        message_ids = [message["Message-ID"] for message in mail.messages]
        assert len(set(message_ids)) == len(message_ids)
        for _, address in sold:
            assert mail.to(address), f"no e-mail reached {address}"

        # Much later, with everything back: nothing is sent again.
        clock.advance(timedelta(hours=6))
        _run(relay)
        assert len(mail.messages) == len(emails)
        assert len(factory.orders()) == len(orders)
    finally:
        factory.stop()
        mail.stop()
