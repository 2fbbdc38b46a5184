"""Payments whose outcome is unknown, settled by asking the provider, never by guessing.

A call to the provider that got no answer (a timeout, a crash after our commit) leaves the
payment `pending`, or a sale's payment `authorised` with its capture unconfirmed. The money
may or may not have moved, so nobody decides by themselves: `billing.resolve_payment` asks the
provider by our own reference (`PaymentProvider.lookup`) and applies exactly what it says
(`service.catch_up`): authorised (a sale's payment is then captured, a store's is left to the
store), declined (failed), captured (settled and invoiced, once), voided. A payment the
provider has never heard of is asked about again, with a growing delay, until
`NEVER_RECEIVED_AFTER` since it was created; then it fails with `provider.never_received`
(should the provider still authorise it later, that hold is released: `service.catch_up`).

The question is queued where the call timed out, in the same transaction; a periodic sweep
(`billing.resolve_sweep`, started by the worker) queues it for any payment stuck for longer
than `STUCK_AFTER` that nobody is asking about, so a crash between the commit and the call
is covered too. Each step locks the payment row, as the webhook does: an event arriving
meanwhile finds it moved on and repeats nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from caas.billing import service
from caas.billing.models import Payment
from caas.billing.provider import PaymentProvider, ProviderError, SandboxProvider
from caas.billing.rules import NEVER_RECEIVED, OPEN_STATES
from caas.core.clock import Clock
from caas.core.db import unit_of_work
from caas.core.history import Actor
from caas.core.outbox import Handler, OutboxMessage, enqueue
from caas.core.settings import Settings

log = structlog.get_logger(__name__)

RESOLVE_TOPIC: Final = "billing.resolve_payment"
SWEEP_TOPIC: Final = "billing.resolve_sweep"
ACTOR: Final = Actor.system("payment resolver")
# The first question waits for an answer that is merely late; then the delay doubles.
FIRST_ASK_AFTER: Final = timedelta(seconds=30)
LONGEST_WAIT: Final = timedelta(minutes=10)
# A payment the provider has not heard of this long after we created it never reached it.
NEVER_RECEIVED_AFTER: Final = timedelta(minutes=10)
# The sweep's reach: open payments older than this with nobody asking about them.
STUCK_AFTER: Final = timedelta(minutes=5)
SWEEP_EVERY: Final = timedelta(minutes=5)


def delay(attempt: int) -> timedelta:
    """How long to wait before asking for the `attempt`-th time (counting from 0)."""
    return min(FIRST_ASK_AFTER * (1 << min(attempt, 20)), LONGEST_WAIT)


def schedule(
    session: Session, payment: Payment, *, now: datetime, attempt: int = 0, chain: str = "t"
) -> None:
    """Queue the question about `payment` (in the caller's transaction); once per chain and
    attempt, however many callers ask."""
    enqueue(
        session,
        topic=RESOLVE_TOPIC,
        payload={"payment_id": payment.id, "attempt": attempt, "chain": chain},
        dedupe_key=f"{RESOLVE_TOPIC}:{payment.id}:{chain}:{attempt}",
        now=now,
        run_after=now + delay(attempt),
    )


def _waits_for_the_store(payment: Payment) -> bool:
    """An authorised store payment is not stuck: the store captures it once the car runs what
    was paid for (its own job retries an unconfirmed capture)."""
    return payment.state == "authorised" and payment.sale_id is None


def resolve(
    session: Session,
    payment_id: int,
    *,
    provider: PaymentProvider,
    now: datetime,
    attempt: int = 0,
    chain: str = "t",
) -> Payment | None:
    """Ask the provider what became of the payment and apply its answer; ask again later
    while it cannot say. Returns the payment as it stands afterwards."""
    payment = session.get(Payment, payment_id)
    if payment is None or payment.state not in OPEN_STATES or _waits_for_the_store(payment):
        return payment
    # Asked outside the row's lock, as the payment's own calls are: a webhook is not held up.
    try:
        found = provider.lookup(payment.reference)
    except ProviderError as error:
        log.warning("payment.resolve_unanswered", payment_id=payment.id, error=error.message)
        schedule(session, payment, now=now, attempt=attempt + 1, chain=chain)
        return payment
    payment = service.lock_payment(session, payment_id)
    if payment.state not in OPEN_STATES:
        return payment  # an event or a retry settled it meanwhile
    if found is None:
        if payment.state == "pending" and now - payment.created_at >= NEVER_RECEIVED_AFTER:
            service.fail_payment(
                session,
                payment,
                NEVER_RECEIVED,
                "the payment provider never received the payment",
                actor=ACTOR,
                now=now,
            )
        else:
            schedule(session, payment, now=now, attempt=attempt + 1, chain=chain)
        log.info("payment.resolve_not_found", payment_id=payment.id, state=payment.state)
        return payment
    payment = service.catch_up(
        session, payment, found, provider=provider, actor=service.PROVIDER, now=now
    )
    if payment.state in OPEN_STATES and not _waits_for_the_store(payment):
        schedule(session, payment, now=now, attempt=attempt + 1, chain=chain)
    log.info("payment.resolved", payment_id=payment.id, state=payment.state, attempt=attempt)
    return payment


# --- the sweep ------------------------------------------------------------------------------


def _slot(moment: datetime) -> int:
    return int(moment.timestamp() // SWEEP_EVERY.total_seconds())


def _queue_sweep(session: Session, at: datetime, *, now: datetime) -> None:
    enqueue(
        session,
        topic=SWEEP_TOPIC,
        payload={"at": at.isoformat()},
        dedupe_key=f"{SWEEP_TOPIC}:{_slot(at)}",
        now=now,
        run_after=at,
    )


def stuck_payments(session: Session, *, now: datetime) -> list[int]:
    """Open payments older than `STUCK_AFTER` (pending, or a sale's authorised one whose
    capture was never confirmed) that no queued question is about."""
    before = now - STUCK_AFTER
    asked = (
        select(OutboxMessage.payload["payment_id"].as_integer())
        .where(
            OutboxMessage.topic == RESOLVE_TOPIC,
            OutboxMessage.done_at.is_(None),
            OutboxMessage.gave_up_at.is_(None),
        )
        .scalar_subquery()
    )
    query = select(Payment.id).where(
        or_(
            and_(Payment.state == "pending", Payment.created_at <= before),
            and_(
                Payment.state == "authorised",
                Payment.sale_id.is_not(None),
                Payment.updated_at <= before,
            ),
        ),
        Payment.id.not_in(asked),
    )
    return list(session.scalars(query.order_by(Payment.id)))


def sweep(session: Session, *, now: datetime) -> int:
    """Queue the question for every stuck payment, and the next sweep; returns how many."""
    chain = f"sweep-{_slot(now)}"
    found = stuck_payments(session, now=now)
    for payment_id in found:
        enqueue(
            session,
            topic=RESOLVE_TOPIC,
            payload={"payment_id": payment_id, "attempt": 0, "chain": chain},
            dedupe_key=f"{RESOLVE_TOPIC}:{payment_id}:{chain}:0",
            now=now,
        )
    _queue_sweep(session, now + SWEEP_EVERY, now=now)
    if found:
        log.warning("payment.stuck_found", payments=found)
    return len(found)


def start_sweeping(sessions: sessionmaker[Session], clock: Clock) -> None:
    """Queue the sweep now unless its run of this period is queued already (the worker calls
    it at start; the chain then queues itself). A database that is down now only delays it
    to the next start."""
    try:
        with unit_of_work(sessions) as session:
            now = clock.now()
            _queue_sweep(session, now, now=now)
    except SQLAlchemyError as error:
        log.warning("billing.resolve_sweep_not_started", error=str(error))


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    """The resolver's topics (registered in `caas.worker.build_handlers`)."""

    def on_resolve(session: Session, payload: dict[str, Any]) -> None:
        with SandboxProvider.from_settings(settings) as opened:
            resolve(
                session,
                int(payload["payment_id"]),
                provider=opened,
                now=clock.now(),
                attempt=int(payload.get("attempt", 0)),
                chain=str(payload.get("chain", "t")),
            )

    def on_sweep(session: Session, _payload: dict[str, Any]) -> None:
        sweep(session, now=clock.now())

    return {RESOLVE_TOPIC: on_resolve, SWEEP_TOPIC: on_sweep}
