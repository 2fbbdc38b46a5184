"""A store payment authorised and captured in one transaction (the month's metered use): the
same states, history, invoice and ledger as two steps, in fewer statements; payments started
many at once; a payment locked once per transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from caas.billing import ledger, rules, service
from caas.billing.invoices import invoice_of_payment
from caas.billing.models import LedgerEntry, Payment
from caas.billing.provider import ProviderResult, SandboxProvider
from caas.core.clock import FixedClock
from caas.core.history import Actor, HistoryEntry
from caas.core.money import Money
from caas.core.outbox import OutboxMessage
from caas.core.settings import Settings
from caas.protocol.payments import CARD_SUCCEEDS
from tests.billing.conftest import PaymentSandbox, buyer

ACTOR = Actor.system("metering")


@contextmanager
def statements(db: Session) -> Iterator[list[str]]:
    """The SQL statements `db` sends inside the block, first words each."""
    sent: list[str] = []

    def note(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if not statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):  # the tests' commits
            sent.append(" ".join(statement.split()[:4]))

    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _asked(customer_id: int, token: str, key: str, net_minor: int = 2_000) -> service.StorePayment:
    return service.StorePayment(
        customer_id=customer_id,
        kind="metered",
        lines=[rules.priced_line("Power boost, 12 hours × 1,50 €", net_minor, 2100)],
        currency="EUR",
        country="ES",
        payment_method=token,
        idempotency_key=key,
    )


def _kinds(db: Session, payment: Payment) -> list[str]:
    return list(
        db.scalars(
            select(LedgerEntry.kind)
            .where(LedgerEntry.payment_id == payment.id, LedgerEntry.position == 1)
            .order_by(LedgerEntry.id)
        )
    )


def _events(db: Session, payment: Payment) -> list[str]:
    return list(
        db.scalars(
            select(HistoryEntry.event)
            .where(HistoryEntry.subject_type == "payment", HistoryEntry.subject_id == payment.id)
            .order_by(HistoryEntry.id)
        )
    )


def test_a_charge_at_once_is_captured_invoiced_and_posted_as_in_two_steps(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    [payment] = service.begin_store_payments(
        db, [_asked(who.customer.id, token, "metered:1:1:2026-10")], actor=ACTOR, now=clock.now()
    )
    db.commit()
    assert payment.state == "pending"  # read again after the commit, as the settlement has it
    with SandboxProvider.from_settings(settings) as provider, statements(db) as sent:
        payment = service.charge_store_payment(
            db, payment, payment_method=token, provider=provider, actor=ACTOR, now=clock.now()
        )
        db.flush()
    assert payment.state == "captured"
    assert payment_sandbox.captures(payment.reference) == 1
    # The payment read once (the lock after the authorisation), both postings in one insert.
    assert sum(1 for line in sent if line.startswith("SELECT payments.id")) == 1, sent
    assert sum(1 for line in sent if line.startswith("INSERT INTO ledger_entries")) == 1
    # The lock, the payment and its two history rows, the country (the customer is in the
    # session already), the counter, the invoice, its lines, its history row, the ledger: 9
    # statements (authorise_payment then capture_payment send twice as many).
    assert len(sent) == 9, sent
    db.commit()
    invoice = invoice_of_payment(db, payment.id)
    assert invoice is not None and invoice.gross_minor == payment.amount_minor
    assert _kinds(db, payment) == ["authorisation", "capture"]
    balances = ledger.balances(db, customer_id=who.customer.id)
    assert balances[ledger.HOLDS] == 0
    assert balances[ledger.CASH] == payment.amount_minor
    assert balances[ledger.revenue("Power boost, 12 hours × 1,50 €")] == -2_000
    assert _events(db, payment) == ["payment.pending", "payment.authorised", "payment.captured"]
    # A second run repeats nothing.
    with SandboxProvider.from_settings(settings) as provider:
        again = service.charge_store_payment(
            db, payment, payment_method=token, provider=provider, actor=ACTOR, now=clock.now()
        )
    db.commit()
    assert again.state == "captured"
    assert payment_sandbox.captures(payment.reference) == 1
    assert _kinds(db, payment) == ["authorisation", "capture"]


class _CaptureUnreachable(SandboxProvider):
    """The real sandbox for the authorisation; the capture goes to a port nobody listens on,
    as when the provider cannot be reached between the two calls."""

    def __init__(self, url: str, api_key: str, dead_url: str) -> None:
        super().__init__(url, api_key)
        self.dead = SandboxProvider(dead_url, api_key)

    def capture(self, provider_ref: str, amount: Money, idempotency_key: str) -> ProviderResult:
        return self.dead.capture(provider_ref, amount, idempotency_key)


def test_a_capture_that_does_not_get_through_still_posts_the_hold(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    [payment] = service.begin_store_payments(
        db, [_asked(who.customer.id, token, "metered:1:2:2026-10")], actor=ACTOR, now=clock.now()
    )
    db.commit()
    assert settings.payment_url and settings.payment_api_key
    provider = _CaptureUnreachable(
        settings.payment_url, settings.payment_api_key, "http://127.0.0.1:9"
    )
    with provider:
        payment = service.charge_store_payment(
            db, payment, payment_method=token, provider=provider, actor=ACTOR, now=clock.now()
        )
        provider.dead.close()
    db.commit()
    assert payment.state == "authorised"
    assert invoice_of_payment(db, payment.id) is None
    assert _kinds(db, payment) == ["authorisation"]
    assert ledger.balances(db, customer_id=who.customer.id)[ledger.HOLDS] == payment.amount_minor
    # The provider will be asked what became of the capture.
    asked = db.scalars(
        select(OutboxMessage.payload).where(OutboxMessage.topic == "billing.resolve_payment")
    ).all()
    assert {"payment_id": payment.id, "attempt": 0, "chain": "t"} in asked


def test_payments_begun_together_are_written_in_one_insert_in_the_asked_order(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    customer_id = who.customer.id
    [earlier] = service.begin_store_payments(
        db, [_asked(customer_id, token, "metered:1:9:2026-09")], actor=ACTOR, now=clock.now()
    )
    db.commit()
    asked = [_asked(customer_id, token, f"metered:1:{car}:2026-10", 1_000 + car) for car in (3, 4)]
    asked.insert(1, _asked(customer_id, token, "metered:1:9:2026-09"))  # started already
    asked.append(_asked(customer_id, token, "metered:1:3:2026-10", 1_003))  # asked twice
    with statements(db) as sent:
        begun = service.begin_store_payments(db, asked, actor=ACTOR, now=clock.now())
        db.flush()
    assert [line.split()[0:3] for line in sent] == [
        ["SELECT", "payments.id,", "payments.sale_id,"],
        ["INSERT", "INTO", "payments"],
        ["INSERT", "INTO", "history"],
    ]
    assert begun[1] is earlier and begun[3] is begun[0]
    assert [payment.idempotency_key for payment in begun] == [one.idempotency_key for one in asked]
    assert [payment.amount_minor for payment in (begun[0], begun[2])] == [
        rules.totals(list(one.lines)).gross_minor for one in (asked[0], asked[2])
    ]
    assert all(payment.state == "pending" for payment in begun)
    assert _events(db, begun[2]) == ["payment.pending"]


def test_a_payment_is_locked_once_per_transaction_and_again_in_the_next(
    db: Session, settings: Settings, clock: FixedClock, payment_sandbox: PaymentSandbox
) -> None:
    who = buyer(db, settings, clock)
    token = payment_sandbox.token(CARD_SUCCEEDS)
    [payment] = service.begin_store_payments(
        db, [_asked(who.customer.id, token, "metered:1:5:2026-10")], actor=ACTOR, now=clock.now()
    )
    db.commit()
    with statements(db) as sent:
        first = service.lock_payment(db, payment.id)
        assert service.lock_payment(db, payment.id) is first
    assert len(sent) == 1
    db.commit()
    with statements(db) as sent:
        service.lock_payment(db, payment.id)  # a new transaction: locked again
        savepoint = db.begin_nested()
        service.lock_payment(db, payment.id)  # inside a savepoint: locked again
        savepoint.rollback()
        service.lock_payment(db, payment.id)  # the savepoint's lock went with it
    assert sum(1 for line in sent if line.startswith("SELECT payments.id")) == 3
    db.rollback()
