"""Reconciliation: the ledger beside the payment sandbox's settlement report."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from caas import cli
from caas.billing import ledger, reconcile, rules, service
from caas.billing.models import Payment
from caas.billing.provider import SandboxProvider
from caas.billing.reconcile import Difference
from caas.core.clock import FixedClock
from caas.core.history import Actor
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS, Settlement
from tests.billing.conftest import PaymentSandbox, buyer
from tests.billing.test_chargebacks import dispute

ACTOR = Actor(kind="customer", label="test")


def _captured(
    db: Session,
    settings: Settings,
    clock: FixedClock,
    payment_sandbox: PaymentSandbox,
    *,
    customer_id: int,
    key: str,
) -> Payment:
    token = payment_sandbox.token(CARD_SUCCEEDS)
    payment = service.begin_store_payment(
        db,
        customer_id=customer_id,
        kind="option",
        lines=[rules.priced_line("Winter traction, 1 month", 1_000, 2100)],
        currency="EUR",
        country="ES",
        payment_method=token,
        idempotency_key=key,
        actor=ACTOR,
        now=clock.now(),
    )
    db.commit()
    with SandboxProvider.from_settings(settings) as provider:
        payment = service.authorise_payment(
            db, payment, payment_method=token, provider=provider, actor=ACTOR, now=clock.now()
        )
        payment = service.capture_payment(
            db, payment, provider=provider, actor=ACTOR, now=clock.now()
        )
    assert payment.state == "captured"
    return payment


@dataclass(frozen=True)
class Paid:
    first: Payment
    second: Payment
    settlements: list[Settlement]


@pytest.fixture
def paid(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> Paid:
    """Two captured payments of 12.10, the first partly refunded (2.10 then 1.00); the
    sandbox's report restricted to them (it serves every test of the run)."""
    customer_id = buyer(db, settings, clock).customer.id
    first = _captured(db, settings, clock, payment_sandbox, customer_id=customer_id, key="r-1")
    second = _captured(db, settings, clock, payment_sandbox, customer_id=customer_id, key="r-2")
    with SandboxProvider.from_settings(settings) as provider:
        for amount in (210, 100):
            first = service.refund_payment(
                db, first, amount_minor=amount, provider=provider, actor=ACTOR, now=clock.now()
            )
    db.commit()
    settlements = payment_sandbox.settlements(first.reference) + payment_sandbox.settlements(
        second.reference
    )
    assert sorted(s.kind for s in settlements) == ["capture", "capture", "refund", "refund"]
    return Paid(first, second, settlements)


def test_the_ledger_matches_the_provider_when_nothing_is_wrong(db: Session, paid: Paid) -> None:
    assert reconcile.reconcile(db, paid.settlements) == []


def test_every_planted_difference_is_listed(db: Session, paid: Paid) -> None:
    planted = [
        # A capture the ledger never heard of.
        paid.settlements[0].model_copy(update={"reference": "pay_unknown", "id": "auth_x"}),
        # The second payment captured for one cent more than the ledger says.
        *(
            s.model_copy(update={"amount_minor": s.amount_minor + 1})
            if s.reference == paid.second.reference
            else s
            for s in paid.settlements
            # The first payment's refunds are missing from the report.
            if not (s.reference == paid.first.reference and s.kind == "refund")
        ),
    ]
    found = reconcile.reconcile(db, planted)
    assert found == sorted(
        [
            Difference("capture", "pay_unknown", "EUR", None, 1_210),
            Difference("capture", paid.second.reference, "EUR", 1_210, 1_211),
            Difference("refund", paid.first.reference, "EUR", 310, None),
        ]
    )
    assert sorted(d.describe() for d in found) == sorted(
        [
            f"capture {paid.second.reference}: amount mismatch (ledger 1210, provider 1211 EUR)",
            "capture pay_unknown: missing in the ledger (provider 1210 EUR)",
            f"refund {paid.first.reference}: missing at the provider (ledger 310 EUR)",
        ]
    )


def test_a_chargeback_at_the_provider_is_compared_with_the_ledger(
    db: Session, paid: Paid, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    """The card's bank takes 5.00 of the second payment back: the provider's report says so at
    once; the ledger lacks it until the provider's event is applied, then both agree."""
    assert paid.second.provider_ref is not None
    taken = dispute(payment_sandbox, paid.second.provider_ref, amount_minor=500)
    assert taken.status_code == 201, taken.text
    report = payment_sandbox.settlements(paid.first.reference) + payment_sandbox.settlements(
        paid.second.reference
    )
    charged_back = [s for s in report if s.kind == "chargeback"]
    assert [(s.id, s.reference, s.amount_minor) for s in charged_back] == [
        (taken.json()["id"], paid.second.reference, 500)
    ]

    missing = reconcile.reconcile(db, report)
    assert missing == [Difference("chargeback", paid.second.reference, "EUR", None, 500)]
    assert missing[0].describe() == (
        f"chargeback {paid.second.reference}: missing in the ledger (provider 500 EUR)"
    )

    event = payment_sandbox.inbox.wait_for(paid.second.reference, "chargeback.created").event
    with SandboxProvider.from_settings(settings) as provider:
        service.apply_provider_event(db, event, provider=provider, now=clock.now())
    db.commit()
    assert reconcile.reconcile(db, report) == []


def test_a_chargeback_only_the_ledger_knows_is_a_difference(
    db: Session, paid: Paid, clock: FixedClock
) -> None:
    assert ledger.post_chargeback(
        db, paid.first, amount_minor=400, provider_ref="cb_never_made", now=clock.now()
    )
    found = reconcile.reconcile(db, paid.settlements)
    assert found == [Difference("chargeback", paid.first.reference, "EUR", 400, None)]
    assert found[0].describe() == (
        f"chargeback {paid.first.reference}: missing at the provider (ledger 400 EUR)"
    )


def test_a_day_compares_only_that_days_postings(db: Session, paid: Paid, clock: FixedClock) -> None:
    today = clock.now().date()
    assert reconcile.ledger_movements(db, day=today)
    assert reconcile.ledger_movements(db, day=date(2000, 1, 1)) == {}


@pytest.fixture
def command(
    monkeypatch: pytest.MonkeyPatch, sessions: sessionmaker[Session], settings: Settings
) -> Iterator[list[date | None]]:
    """`caas billing reconcile` on the test's own database and the test's settings; the
    days the command asked the provider for are kept."""

    @dataclass
    class TestRuntime:
        sessions: sessionmaker[Session]

        def close(self) -> None:
            pass

    asked: list[date | None] = []
    fetch = reconcile.fetch_settlements
    monkeypatch.setattr(cli, "_settings", lambda: settings)
    monkeypatch.setattr(
        "caas.runtime.Runtime.connect", lambda _settings: TestRuntime(sessions=sessions)
    )

    def fetching(settings: Settings, *, day: date | None = None) -> list[Settlement]:
        asked.append(day)
        return fetch(settings, day=day)

    monkeypatch.setattr(reconcile, "fetch_settlements", fetching)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    on_sigterm = signal.getsignal(signal.SIGTERM)
    yield asked
    root.handlers[:] = handlers
    root.setLevel(level)
    signal.signal(signal.SIGTERM, on_sigterm)


def test_the_command_prints_each_difference_and_exits_1(
    command: list[date | None], paid: Paid, payment_sandbox: PaymentSandbox
) -> None:
    # The sandbox's report holds every test's payments; this test's ledger holds two.
    result = CliRunner().invoke(cli.app, ["billing", "reconcile"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert not any(paid.first.reference in line for line in lines)
    assert lines and all("missing in the ledger" in line for line in lines)
    assert command == [None]


def test_the_command_exits_0_when_clean(
    command: list[date | None], paid: Paid, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "fetch_settlements", lambda _settings, **_day: paid.settlements)
    day = clock.now().date().isoformat()
    result = CliRunner().invoke(cli.app, ["billing", "reconcile", "--date", day])
    assert result.exit_code == 0, result.output
    assert "matches the provider's 4 settlements" in result.output


def test_a_malformed_date_is_one_line_and_exit_2() -> None:
    result = CliRunner().invoke(cli.app, ["billing", "reconcile", "--date", "yesterday"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
