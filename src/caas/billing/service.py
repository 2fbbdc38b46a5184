"""The rules of payments: start one, take it through the provider, settle it, read them.

A payment of a sale goes in two steps, with a commit between them (the route does it):

1. `begin_sale_payment` checks the order and writes the payment as `pending` with the
   customer's Idempotency-Key. Once committed, a retry with that key finds this row.
2. `drive_payment` authorises and captures at the provider with keys derived from the
   payment's id, so the provider too answers a repeated call with its first answer. A
   captured payment is settled at once: invoice, history, notification, and the order moves.

An answer that does not come in time leaves the payment pending (or, for a capture, still
authorised) and queues a question to the provider (`caas.billing.resolve`); whichever comes
first, that answer, the provider's signed event (`apply_provider_event`) or a retry with the
same key, settles it, once: each brings the payment up to what the provider says
(`catch_up`), never backwards and never twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.accounts.models import Role, User
from caas.billing import invoices, ledger, rules
from caas.billing.models import Invoice, Payment
from caas.billing.provider import PaymentProvider, ProviderError, ProviderResult, ProviderTimeout
from caas.billing.rules import NEVER_RECEIVED
from caas.core.errors import Conflict, Forbidden, NotFound
from caas.core.history import Actor, record
from caas.core.idempotency import fingerprint
from caas.core.live import announce
from caas.core.money import Money
from caas.notifications.service import notify_user
from caas.protocol.payments import Authorization, Event
from caas.sales import service as sales
from caas.sales.models import Customer, Sale

log = structlog.get_logger(__name__)

PROVIDER = Actor(kind="provider", label="payment provider")


# Reading.


def payments_for_sale(session: Session, sale_id: int) -> list[Payment]:
    """Every payment attempt of an order, oldest first (failed ones included)."""
    query = select(Payment).where(Payment.sale_id == sale_id).order_by(Payment.id)
    return list(session.scalars(query))


def amount_paid(session: Session, sale_id: int) -> int:
    """Money in for an order, in minor units: captured less refunded."""
    paid = session.scalar(
        select(func.coalesce(func.sum(Payment.amount_minor - Payment.refunded_minor), 0)).where(
            Payment.sale_id == sale_id, Payment.state.in_(("captured", "refunded"))
        )
    )
    return int(paid or 0)


def invoices_for_customer(session: Session, customer_id: int) -> list[Invoice]:
    """A customer's invoices, oldest first."""
    query = (
        select(Invoice)
        .where(Invoice.customer_id == customer_id)
        .order_by(Invoice.issued_at, Invoice.id)
    )
    return list(session.scalars(query))


def list_invoices_for(
    session: Session, user: User, *, limit: int = 50, offset: int = 0
) -> list[Invoice]:
    """A customer's own invoices, or every invoice for the maker's operators."""
    query = select(Invoice)
    if user.role is Role.CUSTOMER:
        query = query.where(Invoice.customer_id == sales.customer_of_user(session, user).id)
    elif user.role is not Role.OPERATOR:
        raise Forbidden("invoices are for their customer and the maker's operators")
    query = query.order_by(Invoice.issued_at.desc(), Invoice.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(query))


def get_invoice_for(session: Session, user: User, invoice_id: int) -> Invoice:
    """The invoice if `user` may see it; otherwise the same 404 as a missing one."""
    invoice = session.get(Invoice, invoice_id)
    visible = invoice is not None and (
        user.role is Role.OPERATOR
        or (
            user.role is Role.CUSTOMER
            and session.scalar(select(Customer.user_id).where(Customer.id == invoice.customer_id))
            == user.id
        )
    )
    if invoice is None or not visible:
        raise NotFound("no such invoice", code="invoice.not_found")
    return invoice


# Paying for a sale.


def _payment_by_key(session: Session, customer_id: int, key: str) -> Payment | None:
    return session.scalars(
        select(Payment).where(Payment.customer_id == customer_id, Payment.idempotency_key == key)
    ).first()


def begin_sale_payment(
    session: Session,
    *,
    user: User,
    sale_id: int,
    kind: str,
    card_token: str,
    idempotency_key: str,
    now: datetime,
) -> Payment:
    """The payment this key already started, or a new pending one if the order expects it."""
    customer = sales.customer_of_user(session, user)
    request_hash = fingerprint({"sale_id": sale_id, "kind": kind, "card_token": card_token})

    def earlier() -> Payment | None:
        payment = _payment_by_key(session, customer.id, idempotency_key)
        if payment is not None and payment.request_hash != request_hash:
            raise Conflict(
                "this Idempotency-Key was already used for a different payment",
                code="idempotency.key_reused",
            )
        return payment

    found = earlier()
    if found is not None:
        return found
    sale = sales.get_sale_for(session, user, sale_id, lock=True)
    found = earlier()  # a concurrent retry may have committed while we waited for the lock
    if found is not None:
        return found
    if sale.state != rules.PAYABLE_IN[kind]:
        raise Conflict(
            f"the order does not expect the {kind} payment now (it is {sale.state})",
            code="payment.not_due",
            state=sale.state,
        )
    running = session.scalars(
        select(Payment.id).where(
            Payment.sale_id == sale.id,
            Payment.kind == kind,
            Payment.state.in_(rules.OPEN_STATES),
        )
    ).first()
    if running is not None:
        raise Conflict(
            "a payment of this order is still being processed; wait for it or retry it",
            code="payment.in_progress",
            payment_id=running,
        )
    due = (
        sale.deposit_minor
        if kind == "deposit"
        else sale.total_minor - amount_paid(session, sale.id)
    )
    if due <= 0:
        raise Conflict("nothing is left to pay on this order", code="payment.nothing_due")
    payment = Payment(
        sale_id=sale.id,
        customer_id=customer.id,
        kind=kind,
        amount_minor=due,
        currency=sale.currency,
        state="pending",
        reference=rules.new_payment_reference(),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        created_at=now,
        updated_at=now,
    )
    session.add(payment)
    session.flush()
    record(
        session,
        at=now,
        actor=Actor(kind=user.role.value, label=user.email, user_id=user.id),
        subject_type="payment",
        subject_id=payment.id,
        customer_id=customer.id,
        event="payment.pending",
        to_state="pending",
        details={"sale_id": sale.id, "kind": kind, "amount_minor": due, "currency": sale.currency},
    )
    return payment


def drive_payment(
    session: Session,
    payment: Payment,
    *,
    card_token: str,
    provider: PaymentProvider,
    actor: Actor,
    now: datetime,
) -> Payment:
    """Take the payment as far as the provider lets us now; return it in its new state."""
    payment = authorise_payment(
        session, payment, payment_method=card_token, provider=provider, actor=actor, now=now
    )
    if payment.state == "authorised":
        payment = _capture(session, payment, provider=provider, actor=actor, now=now)
    return payment


def authorise_payment(
    session: Session,
    payment: Payment,
    *,
    payment_method: str,
    provider: PaymentProvider,
    actor: Actor,
    now: datetime,
) -> Payment:
    """Hold the amount on the card: a pending payment becomes authorised or failed, or stays
    pending when the provider's answer does not come in time (its event settles it later).
    Any other state is returned as it is, so a retry repeats nothing."""
    payment, _ = _authorise(
        session, payment, payment_method=payment_method, provider=provider, actor=actor, now=now
    )
    return payment


def _authorise(
    session: Session,
    payment: Payment,
    *,
    payment_method: str,
    provider: PaymentProvider,
    actor: Actor,
    now: datetime,
    hold_posting_later: bool = False,
) -> tuple[Payment, bool]:
    """`authorise_payment`; with `hold_posting_later`, the hold's ledger posting is left to
    the caller, and the second value says whether this call authorised the payment (so the
    posting is still to be written)."""
    if payment.state != "pending":
        return payment, False
    try:
        result = provider.authorise(
            Money(payment.amount_minor, payment.currency),
            payment_method,
            rules.provider_key(payment.reference, "authorise"),
            payment.reference,
        )
    except ProviderTimeout:
        payment = _lock(session, payment.id)
        if payment.state == "pending":
            _ask_provider_later(session, payment, now=now)
        return payment, False
    except ProviderError as error:
        payment = _lock(session, payment.id)
        if payment.state == "pending":
            _fail(session, payment, "provider_error", error.message, actor=actor, now=now)
        return payment, False
    payment = _lock(session, payment.id)
    was_pending = payment.state == "pending"
    _apply_authorisation(
        session, payment, result, actor=actor, now=now, post_hold=not hold_posting_later
    )
    return payment, hold_posting_later and was_pending and payment.state == "authorised"


def charge_store_payment(
    session: Session,
    payment: Payment,
    *,
    payment_method: str,
    provider: PaymentProvider,
    actor: Actor,
    now: datetime,
) -> Payment:
    """Authorise and capture a store payment made without the customer (the month's metered
    use): `authorise_payment`, then `capture_payment` when it was authorised, with the same
    states, history and invoice. The hold's ledger posting, when both steps happen in this
    transaction, is written in one statement with the capture's instead of one each."""
    payment, hold_unposted = _authorise(
        session,
        payment,
        payment_method=payment_method,
        provider=provider,
        actor=actor,
        now=now,
        hold_posting_later=True,
    )
    if payment.state != "authorised":
        return payment
    payment = _lock(session, payment.id)
    if payment.state != "authorised":
        if hold_unposted:
            ledger.post_authorisation(session, payment, now=now)
        return payment
    return _capture(
        session, payment, provider=provider, actor=actor, now=now, hold_unposted=hold_unposted
    )


# The store's payments: held at checkout, captured once the car runs what was paid for.


@dataclass(frozen=True)
class StorePayment:
    """What `begin_store_payment` is asked for one payment (see there)."""

    customer_id: int
    kind: str
    lines: Sequence[rules.LineDraft]
    currency: str
    country: str
    payment_method: str
    idempotency_key: str
    details: dict[str, object] | None = None


def begin_store_payment(
    session: Session,
    *,
    customer_id: int,
    kind: str,
    lines: Sequence[rules.LineDraft],
    currency: str,
    country: str,
    payment_method: str,
    idempotency_key: str,
    actor: Actor,
    now: datetime,
    details: dict[str, object] | None = None,
) -> Payment:
    """The payment this key already started for the customer, or a new pending one for the
    gross of `lines` (which its invoice will list once captured).

    `kind` is one of `rules.STORE_KINDS`; the key is the caller's (the customer's
    Idempotency-Key, or one derived from a renewal's or occurrence's id), so a retry finds this
    row instead of charging twice. Commit before calling the provider (`authorise_payment`).
    """
    asked = StorePayment(
        customer_id, kind, lines, currency, country, payment_method, idempotency_key, details
    )
    return begin_store_payments(session, [asked], actor=actor, now=now)[0]


def begin_store_payments(
    session: Session, asked: Sequence[StorePayment], *, actor: Actor, now: datetime
) -> list[Payment]:
    """`begin_store_payment` for many payments (the month's metered charges of a chunk of
    cars), one answer each in the same order: the payments their keys started already read in
    one statement, the new ones written in one and their history rows in one."""
    for one in asked:
        if one.kind not in rules.STORE_KINDS:
            raise ValueError(f"not a store payment: {one.kind}")
    started: dict[tuple[int, str], Payment] = {}
    if asked:
        for earlier in session.scalars(
            select(Payment).where(
                Payment.customer_id.in_({one.customer_id for one in asked}),
                Payment.idempotency_key.in_({one.idempotency_key for one in asked}),
            )
        ):
            started[earlier.customer_id, earlier.idempotency_key] = earlier
    answers: list[Payment] = []
    new: list[tuple[Payment, StorePayment]] = []
    for one in asked:
        drafts = [
            {
                "description": line.description,
                "net_minor": line.net_minor,
                "vat_rate_bp": line.vat_rate_bp,
                "vat_minor": line.vat_minor,
            }
            for line in one.lines
        ]
        request_hash = fingerprint(
            {
                "kind": one.kind,
                "lines": drafts,
                "currency": one.currency,
                "method": one.payment_method,
            }
        )
        found = started.get((one.customer_id, one.idempotency_key))
        if found is not None:
            if found.request_hash != request_hash:
                raise Conflict(
                    "this Idempotency-Key was already used for a different payment",
                    code="idempotency.key_reused",
                )
            answers.append(found)
            continue
        amount = rules.totals(list(one.lines)).gross_minor
        if amount <= 0:
            raise ValueError("a store payment takes a positive amount")
        payment = Payment(
            sale_id=None,
            customer_id=one.customer_id,
            kind=one.kind,
            amount_minor=amount,
            currency=one.currency,
            state="pending",
            reference=rules.new_payment_reference(),
            idempotency_key=one.idempotency_key,
            request_hash=request_hash,
            invoice_lines=drafts,
            invoice_country=one.country,
            created_at=now,
            updated_at=now,
        )
        # A key asked twice in one call is one payment, as two calls in a row would give.
        started[one.customer_id, one.idempotency_key] = payment
        new.append((payment, one))
        answers.append(payment)
    if new:
        session.add_all(payment for payment, _ in new)
        session.flush()
    for payment, one in new:
        record(
            session,
            at=now,
            actor=actor,
            subject_type="payment",
            subject_id=payment.id,
            customer_id=one.customer_id,
            event="payment.pending",
            to_state="pending",
            details={
                "kind": one.kind,
                "amount_minor": payment.amount_minor,
                "currency": one.currency,
                **(one.details or {}),
            },
        )
    return answers


def capture_payment(
    session: Session, payment: Payment, *, provider: PaymentProvider, actor: Actor, now: datetime
) -> Payment:
    """Take held money: authorised becomes captured (and invoiced) or failed; a provider that
    does not answer leaves it authorised, to be retried (the provider's key repeats the same
    capture). Any other state is returned as it is."""
    payment = _lock(session, payment.id)
    if payment.state != "authorised":
        return payment
    return _capture(session, payment, provider=provider, actor=actor, now=now)


def void_payment(
    session: Session,
    payment: Payment,
    *,
    provider: PaymentProvider,
    reason: str,
    actor: Actor,
    now: datetime,
) -> Payment:
    """Release a hold that will not be captured (the car refused or never applied the
    option): authorised becomes voided. Raises ProviderError/ProviderTimeout when the
    provider cannot be reached (retry later); other states are returned as they are."""
    payment = _lock(session, payment.id)
    if payment.state != "authorised":
        return payment
    assert payment.provider_ref is not None
    result = provider.void(payment.provider_ref, rules.provider_key(payment.reference, "void"))
    payment = _lock(session, payment.id)
    if payment.state != "authorised":
        return payment
    if not result.ok:
        raise Conflict(
            result.message or "the provider refused to release the payment",
            code="payment.void_refused",
        )
    payment.failure_code = reason[:60]
    _move(session, payment, "voided", actor=actor, now=now, details={"reason": reason})
    return payment


def _ask_provider_later(session: Session, payment: Payment, *, now: datetime) -> None:
    # Imported here: the resolver drives this module.
    from caas.billing import resolve

    resolve.schedule(session, payment, now=now)


def lock_payment(session: Session, payment_id: int) -> Payment:
    """The payment row, locked and freshly read (for the resolver and chargebacks)."""
    return _lock(session, payment_id)


# `session.info` key: the payments locked in the session's current (sub)transaction.
_LOCKED = "caas.billing.locked_payments"


def _lock(session: Session, payment_id: int) -> Payment:
    """The payment row, locked and freshly read: a webhook may have moved it meanwhile.

    A row this session locked already in its current transaction (and savepoint) cannot have
    changed since (the lock holds until the transaction ends, and this session's own changes
    are in its object), so it is not read again: one settlement locks its payment once."""
    held: tuple[object, set[int]] | None = session.info.get(_LOCKED)
    if (
        held is not None
        and session.get_transaction() is not None
        and held[0] == (session.get_transaction(), session.get_nested_transaction())
        and payment_id in held[1]
    ):
        known = session.get(Payment, payment_id)  # the session's own object, no statement
        if known is not None:
            return known
    payment = session.scalars(
        select(Payment)
        .where(Payment.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    # The transaction the lock was taken in (the query began it if none was running).
    scope = (session.get_transaction(), session.get_nested_transaction())
    if held is None or held[0] != scope:
        held = (scope, set())
        session.info[_LOCKED] = held
    held[1].add(payment_id)
    return payment


def _move(
    session: Session,
    payment: Payment,
    to_state: str,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, object] | None = None,
    post_hold: bool = True,
) -> None:
    rules.PAYMENT.check(payment.state, to_state)
    from_state = payment.state
    payment.state = to_state
    payment.updated_at = now
    record(
        session,
        at=now,
        actor=actor,
        subject_type="payment",
        subject_id=payment.id,
        customer_id=payment.customer_id,
        event=f"payment.{to_state}",
        from_state=from_state,
        to_state=to_state,
        details={
            "sale_id": payment.sale_id,
            "kind": payment.kind,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            **(details or {}),
        },
    )
    if payment.sale_id is not None:
        announce(session, f"sale:{payment.sale_id}")  # the order page's "payment in progress"
    if to_state == "authorised" and post_hold:
        ledger.post_authorisation(session, payment, now=now)
    elif to_state == "voided":
        ledger.post_void(session, payment, now=now)


def move_payment(
    session: Session,
    payment: Payment,
    to_state: str,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, object] | None = None,
) -> None:
    """Move a locked payment along `rules.PAYMENT`, with its history row (and ledger)."""
    _move(session, payment, to_state, actor=actor, now=now, details=details)


def fail_payment(
    session: Session, payment: Payment, code: str, reason: str, *, actor: Actor, now: datetime
) -> None:
    """A locked open payment failed for `code` (e.g. the provider never received it)."""
    _fail(session, payment, code, reason, actor=actor, now=now)


def _fail(
    session: Session, payment: Payment, code: str, reason: str, *, actor: Actor, now: datetime
) -> None:
    payment.failure_code = code
    payment.failure_reason = reason[:300]
    _move(session, payment, "failed", actor=actor, now=now, details={"reason": code})


def _apply_authorisation(
    session: Session,
    payment: Payment,
    result: ProviderResult,
    *,
    actor: Actor,
    now: datetime,
    post_hold: bool = True,
) -> None:
    """Record the provider's answer to the authorisation, unless an event already did (the
    hold's ledger posting too, unless `post_hold` is False: the caller writes it)."""
    if payment.state != "pending":
        return
    if result.status == "authorised":
        payment.provider_ref = result.provider_ref
        payment.card_brand = result.card_brand
        payment.card_last4 = result.card_last4
        payment.authorised_at = now
        _move(session, payment, "authorised", actor=actor, now=now, post_hold=post_hold)
    elif result.status == "declined":
        payment.provider_ref = result.provider_ref
        payment.card_brand = result.card_brand
        payment.card_last4 = result.card_last4
        _fail(
            session,
            payment,
            result.reason or "card_declined",
            result.message or "the card was declined",
            actor=actor,
            now=now,
        )
    else:
        _fail(
            session,
            payment,
            result.reason or "provider_refused",
            result.message or "the payment provider refused the payment",
            actor=actor,
            now=now,
        )


def _capture(
    session: Session,
    payment: Payment,
    *,
    provider: PaymentProvider,
    actor: Actor,
    now: datetime,
    hold_unposted: bool = False,
) -> Payment:
    """Capture at the provider and settle the answer; with `hold_unposted`, the hold's ledger
    posting (left by `_authorise` in this transaction) is written too, with the capture's
    when the money is in, on its own otherwise."""
    assert payment.provider_ref is not None
    try:
        result = provider.capture(
            payment.provider_ref,
            Money(payment.amount_minor, payment.currency),
            rules.provider_key(payment.reference, "capture"),
        )
    except (ProviderTimeout, ProviderError) as error:
        # Still authorised: the capture event, a retry with the same key, or the provider's
        # answer to our question finishes it.
        log.warning("payment.capture_unsettled", payment_id=payment.id, error=error.message)
        payment = _lock(session, payment.id)
        if hold_unposted:
            ledger.post_authorisation(session, payment, now=now)
        if payment.state == "authorised":
            _ask_provider_later(session, payment, now=now)
        return payment
    payment = _lock(session, payment.id)
    if payment.state == "authorised" and result.ok:
        settle_captured(session, payment, actor=actor, now=now, with_authorisation=hold_unposted)
        return payment
    if hold_unposted:
        ledger.post_authorisation(session, payment, now=now)
    if payment.state == "authorised":
        _fail(
            session,
            payment,
            result.reason or "capture_refused",
            result.message or "the provider refused the capture",
            actor=actor,
            now=now,
        )
    return payment


def settle_captured(
    session: Session,
    payment: Payment,
    *,
    actor: Actor,
    now: datetime,
    with_authorisation: bool = False,
) -> None:
    """The money is in: invoice, history, the customer told, and the order moves on.

    With `with_authorisation`, the hold's ledger posting, taken in this same transaction and
    not written yet, is written with the capture's (one statement)."""
    payment.captured_at = now
    _move(session, payment, "captured", actor=actor, now=now)
    customer = session.get_one(Customer, payment.customer_id)
    if payment.sale_id is None:
        # Posted before the invoice is numbered: the series' counter, locked from its number
        # until the commit, is held for as few statements as can be (concurrent settlements
        # of the series wait for it).
        ledger.post_capture(
            session,
            payment,
            invoices.store_lines(payment),
            country=payment.invoice_country or customer.country,
            now=now,
            with_authorisation=with_authorisation,
        )
        invoice = invoices.issue_for_store_payment(
            session, payment=payment, customer=customer, now=now
        )
        _record_invoice(session, invoice, payment, actor=actor, now=now)
        return
    sale = sales.lock_sale(session, payment.sale_id)
    invoice = invoices.issue_for_sale_payment(
        session, payment=payment, sale=sale, customer=customer, now=now
    )
    _record_invoice(session, invoice, payment, actor=actor, now=now)
    ledger.post_capture(
        session,
        payment,
        invoices.invoice_lines(session, invoice.id),
        country=customer.country,
        now=now,
        with_authorisation=with_authorisation,
    )
    notify_user(
        session,
        user_id=customer.user_id,
        email=customer.email,
        language=customer.language,
        kind="payment.received",
        context={
            "name": customer.first_name,
            "order_number": sale.number,
            "kind": payment.kind,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "invoice_number": invoice.number,
            "country": customer.country,
        },
        dedupe_key=f"payment.received:{payment.id}",
        now=now,
    )
    _order_paid(session, sale, payment, actor=actor, now=now)


def _record_invoice(
    session: Session, invoice: Invoice, payment: Payment, *, actor: Actor, now: datetime
) -> None:
    record(
        session,
        at=now,
        actor=actor,
        subject_type="invoice",
        subject_id=invoice.id,
        customer_id=invoice.customer_id,
        event="invoice.issued",
        details={
            "number": invoice.number,
            "kind": invoice.kind,
            "gross_minor": invoice.gross_minor,
            "currency": invoice.currency,
            "payment_id": payment.id,
            "sale_id": payment.sale_id,
        },
    )


def _order_paid(
    session: Session, sale: Sale, payment: Payment, *, actor: Actor, now: datetime
) -> None:
    if sale.state != rules.PAYABLE_IN[payment.kind]:
        # Paid while the order had moved on (it cannot, while a payment is open): keep the
        # money and the invoice, and leave a trace for an operator.
        log.error("payment.order_moved_on", payment_id=payment.id, state=sale.state)
        return
    if payment.kind == "deposit":
        sales.deposit_captured(session, sale, actor=actor, now=now)
    else:
        sales.final_payment_captured(session, sale, actor=actor, now=now)


def refund_payment(
    session: Session,
    payment: Payment,
    *,
    amount_minor: int | None,
    provider: PaymentProvider,
    actor: Actor,
    now: datetime,
) -> Payment:
    """Give money back (all that is left when `amount_minor` is None).

    The provider's key counts what was refunded before, so a retry after a timeout repeats
    the same refund instead of making a second one.
    """
    payment = _lock(session, payment.id)
    left = payment.amount_minor - payment.refunded_minor
    amount = left if amount_minor is None else amount_minor
    if payment.state != "captured" or not 0 < amount <= left:
        raise Conflict(
            "this payment cannot be refunded by that amount", code="payment.not_refundable"
        )
    assert payment.provider_ref is not None
    result = provider.refund(
        payment.provider_ref,
        Money(amount, payment.currency),
        rules.provider_key(payment.reference, f"refund-{payment.refunded_minor}-{amount}"),
    )
    if not result.ok:
        raise Conflict(
            result.message or "the provider refused the refund", code="payment.refund_refused"
        )
    _record_refund(session, payment, payment.refunded_minor + amount, actor=actor, now=now)
    return payment


def _record_refund(
    session: Session, payment: Payment, refunded_total: int, *, actor: Actor, now: datetime
) -> None:
    if refunded_total <= payment.refunded_minor:
        return
    refunded_now = refunded_total - payment.refunded_minor
    payment.refunded_minor = refunded_total
    payment.updated_at = now
    ledger.post_refund(
        session, payment, amount_minor=refunded_now, refunded_total=refunded_total, now=now
    )
    if refunded_total >= payment.amount_minor:
        _move(
            session,
            payment,
            "refunded",
            actor=actor,
            now=now,
            details={"refunded_minor": refunded_now},
        )
    else:
        record(
            session,
            at=now,
            actor=actor,
            subject_type="payment",
            subject_id=payment.id,
            customer_id=payment.customer_id,
            event="payment.partially_refunded",
            details={"refunded_minor": refunded_now, "currency": payment.currency},
        )
    # Every refund of captured money gets its credit note, once: a retry or a late provider
    # event finds the refund already counted above and returns before this.
    note = invoices.issue_credit_note(
        session,
        payment=payment,
        refunded_before_minor=refunded_total - refunded_now,
        refunded_now_minor=refunded_now,
        now=now,
    )
    if note is not None:
        _record_invoice(session, note, payment, actor=actor, now=now)


# The provider's signed events.


def _payment_of_event(session: Session, event: Event) -> Payment | None:
    authorization = event.authorization
    payment = session.scalars(
        select(Payment)
        .where(Payment.reference == authorization.reference)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if payment is None:
        return None
    if (authorization.amount_minor, authorization.currency) != (
        payment.amount_minor,
        payment.currency,
    ):
        log.error("payment.event_mismatch", payment_id=payment.id, event_id=event.id)
        return None
    return payment


def catch_up(
    session: Session,
    payment: Payment,
    authorization: Authorization,
    *,
    provider: PaymentProvider,
    actor: Actor,
    now: datetime,
) -> Payment:
    """Bring a locked payment up to what the provider says of it now (an event's snapshot, or
    its answer to `lookup`), whatever order the news comes in: a payment only ever moves
    forward, and every step (invoice, ledger, credit note) happens once.

    An authorised sale payment is captured (the order waits for it); a store payment stays
    authorised until the store captures it. A hold the provider made after we gave the
    payment up as never received is released at once.
    """
    status = authorization.status
    if payment.state == "pending":
        declined = status == "declined"
        _apply_authorisation(
            session,
            payment,
            ProviderResult(
                status="declined" if declined else "authorised",
                provider_ref=authorization.id,
                reason=authorization.decline_code if declined else None,
                message="the card was declined" if declined else None,
                card_brand=authorization.card.brand,
                card_last4=authorization.card.last4,
            ),
            actor=actor,
            now=now,
        )
    if payment.state == "authorised":
        if status == "captured":
            settle_captured(session, payment, actor=actor, now=now)
        elif status == "voided":
            _move(session, payment, "voided", actor=actor, now=now)
        elif status == "authorised" and payment.sale_id is not None:
            payment = _capture(session, payment, provider=provider, actor=actor, now=now)
    if payment.state == "captured" and authorization.refunded_minor > payment.refunded_minor:
        _record_refund(session, payment, authorization.refunded_minor, actor=actor, now=now)
    if (
        payment.state == "failed"
        and payment.failure_code == NEVER_RECEIVED
        and status == "authorised"
    ):
        _release_late_hold(session, payment, authorization, provider=provider, now=now)
    return payment


def _release_late_hold(
    session: Session,
    payment: Payment,
    authorization: Authorization,
    *,
    provider: PaymentProvider,
    now: datetime,
) -> None:
    try:
        result = provider.void(authorization.id, rules.provider_key(payment.reference, "void-late"))
    except (ProviderError, ProviderTimeout) as error:
        log.warning("payment.late_hold_kept", payment_id=payment.id, error=error.message)
        return
    if result.ok:
        record(
            session,
            at=now,
            actor=PROVIDER,
            subject_type="payment",
            subject_id=payment.id,
            customer_id=payment.customer_id,
            event="payment.late_hold_released",
            details={"amount_minor": payment.amount_minor, "currency": payment.currency},
        )


def apply_provider_event(
    session: Session, event: Event, *, provider: PaymentProvider, now: datetime
) -> str:
    """Settle a payment from the provider's event; a repeated, stale or early event changes
    nothing it should not (each carries the authorisation as it stands: `catch_up`).

    Returns the payment's state afterwards (or `ignored` for an event about nothing of ours).
    """
    payment = _payment_of_event(session, event)
    if payment is None:
        return "ignored"
    payment = catch_up(
        session, payment, event.authorization, provider=provider, actor=PROVIDER, now=now
    )
    if event.type == "chargeback.created" and event.chargeback is not None:
        # Imported here: chargebacks reach into the store, which imports this module.
        from caas.billing import chargebacks

        chargebacks.apply_chargeback(session, payment, event.chargeback, now=now)
    return payment.state
