"""The ledger: every money movement of a payment, posted in double entry, append-only.

Accounts (a name each; a colon adds the country or the feature):

- `holds` / `holds:released`: money held on the customer's card. An authorisation is
  posted as a memo pair (debit `holds`, credit `holds:released`) that a capture or a void
  reverses, so the balance of `holds` is what is held right now and nothing of it reaches
  receivable, cash or revenue: a hold is not money the maker has.
- `receivable`: what the customer owes; a capture charges it and settles it at once.
- `cash at provider`: money the payment provider holds for the maker.
- `vat payable:<country>`: VAT collected, owed to that country.
- `revenue:<feature>`: net revenue per option code (the store's purchases), per invoice
  line's description (renewals, occurrences, metered usage) or `revenue:vehicle sale`
  (a sale's deposit and final payment).
- `refunds`: money given back; `chargebacks`: money the card's bank took back.

Each posting has an idempotency key derived from the payment's reference and the movement,
so a retried call or a repeated provider event posts nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from caas.billing.models import LedgerEntry, Payment

HOLDS = "holds"
HOLDS_RELEASED = "holds:released"
RECEIVABLE = "receivable"
CASH = "cash at provider"
REFUNDS = "refunds"
CHARGEBACKS = "chargebacks"
SALE_REVENUE = "revenue:vehicle sale"


def vat_payable(country: str) -> str:
    return f"vat payable:{country}"


def revenue(feature: str) -> str:
    return f"revenue:{feature}"


@dataclass(frozen=True)
class Line:
    """One side of a posting: an account debited or credited by an amount in minor units."""

    account: str
    debit_minor: int = 0
    credit_minor: int = 0


class InvoicedLine(Protocol):
    """An invoice's line as the capture's posting splits it (an `InvoiceLine`, or the
    `LineDraft` it was written from)."""

    @property
    def description(self) -> str: ...

    @property
    def net_minor(self) -> int: ...

    @property
    def vat_minor(self) -> int: ...


class UnbalancedPosting(ValueError):
    """A posting whose debits differ from its credits: a bug, never written."""


@dataclass(frozen=True)
class Posting:
    """One balanced movement of a payment, written once under its idempotency key."""

    kind: str
    key: str
    lines: Sequence[Line]


def post(
    session: Session,
    payment: Payment,
    *,
    kind: str,
    key: str,
    lines: Sequence[Line],
    now: datetime,
) -> bool:
    """Write one balanced posting under `key`; False (and nothing written) if it exists."""
    return post_all(session, payment, [Posting(kind, key, lines)], now=now)


def post_all(
    session: Session, payment: Payment, postings: Sequence[Posting], *, now: datetime
) -> bool:
    """Write the payment's balanced postings in one statement, each under its own key (a key
    already posted is skipped, line by line); False when nothing was written."""
    rows = []
    for posting in postings:
        debits = sum(line.debit_minor for line in posting.lines)
        credits = sum(line.credit_minor for line in posting.lines)
        if debits != credits or not posting.lines:
            raise UnbalancedPosting(f"{posting.key}: debits {debits} != credits {credits}")
        rows += [
            {
                "idempotency_key": posting.key,
                "position": position,
                "kind": posting.kind,
                "payment_id": payment.id,
                "customer_id": payment.customer_id,
                "reference": payment.reference,
                "provider_ref": payment.provider_ref,
                "account": line.account,
                "debit_minor": line.debit_minor,
                "credit_minor": line.credit_minor,
                "currency": payment.currency,
                "posted_at": now,
            }
            for position, line in enumerate(posting.lines, start=1)
        ]
    if not rows:
        return False
    written = session.execute(
        insert(LedgerEntry)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["idempotency_key", "position"])
        .returning(LedgerEntry.id)
    ).all()
    return bool(written)


def _key(payment: Payment, movement: str) -> str:
    return f"payment:{payment.reference}:{movement}"


def authorisation(payment: Payment) -> Posting:
    """The hold, as a memo pair: no effect on receivable, cash or revenue."""
    amount = payment.amount_minor
    return Posting(
        "authorisation",
        _key(payment, "authorise"),
        [Line(HOLDS, debit_minor=amount), Line(HOLDS_RELEASED, credit_minor=amount)],
    )


def post_authorisation(session: Session, payment: Payment, *, now: datetime) -> bool:
    """The hold, as a memo pair: no effect on receivable, cash or revenue."""
    return post_all(session, payment, [authorisation(payment)], now=now)


def _release_hold(amount: int) -> list[Line]:
    return [Line(HOLDS_RELEASED, debit_minor=amount), Line(HOLDS, credit_minor=amount)]


def post_void(session: Session, payment: Payment, *, now: datetime) -> bool:
    """The hold released without taking anything."""
    return post(
        session,
        payment,
        kind="void",
        key=_key(payment, "void"),
        lines=_release_hold(payment.amount_minor),
        now=now,
    )


def post_capture(
    session: Session,
    payment: Payment,
    invoice_lines: Sequence[InvoicedLine],
    *,
    country: str,
    now: datetime,
    with_authorisation: bool = False,
) -> bool:
    """The money taken, split as its invoice's lines say: net per feature, VAT to the country.

    The customer is charged (receivable) and pays at once (cash at the provider); the hold
    is released. With `with_authorisation`, the hold's own posting (`authorisation`), not
    written yet because it was taken in this same transaction, goes in the same statement.
    """
    features = _features(session, payment, [line.description for line in invoice_lines])
    gross = payment.amount_minor
    lines = [Line(RECEIVABLE, debit_minor=gross)]
    for line, feature in zip(invoice_lines, features, strict=True):
        lines.append(Line(feature, credit_minor=line.net_minor))
        if line.vat_minor:
            lines.append(Line(vat_payable(country), credit_minor=line.vat_minor))
    # A capture always equals its invoice's gross; should rounding ever differ, the
    # difference is VAT's, so the posting still balances.
    difference = gross - sum(line.credit_minor for line in lines)
    if difference:
        lines.append(Line(vat_payable(country), credit_minor=difference))
    lines += [Line(CASH, debit_minor=gross), Line(RECEIVABLE, credit_minor=gross)]
    lines += _release_hold(gross)
    capture = Posting("capture", _key(payment, "capture"), lines)
    postings = [authorisation(payment), capture] if with_authorisation else [capture]
    return post_all(session, payment, postings, now=now)


def _features(session: Session, payment: Payment, descriptions: list[str]) -> list[str]:
    """The revenue account of each invoice line: the option's code when the store's
    purchase priced it, otherwise the line's description, `vehicle sale` for a sale."""
    if payment.sale_id is not None:
        return [SALE_REVENUE] * len(descriptions)
    if payment.kind != "option":
        # Only the store's purchases (kind `option`) point at their payment; a renewal's,
        # an occurrence's or a month's lines are their own accounts.
        return [revenue(description) for description in descriptions]
    # The store's lines name the option in the customer's language; its purchase knows the
    # code. Imported here: the store imports billing, not the other way round.
    from caas.store.models import Purchase, PurchaseLine

    codes = dict(
        session.execute(
            select(PurchaseLine.description, PurchaseLine.code)
            .join(Purchase, Purchase.id == PurchaseLine.purchase_id)
            .where(Purchase.payment_id == payment.id)
        ).all()
    )
    return [revenue(codes.get(description, description)) for description in descriptions]


def post_refund(
    session: Session, payment: Payment, *, amount_minor: int, refunded_total: int, now: datetime
) -> bool:
    """Money given back: to the customer's account, then out of the cash at the provider.

    Keyed by the refunded total it brings the payment to, so each refund posts once.
    """
    return post(
        session,
        payment,
        kind="refund",
        key=_key(payment, f"refund-{refunded_total}"),
        lines=[
            Line(REFUNDS, debit_minor=amount_minor),
            Line(RECEIVABLE, credit_minor=amount_minor),
            Line(RECEIVABLE, debit_minor=amount_minor),
            Line(CASH, credit_minor=amount_minor),
        ],
        now=now,
    )


def post_chargeback(
    session: Session, payment: Payment, *, amount_minor: int, provider_ref: str, now: datetime
) -> bool:
    """Money the card's bank took back from the provider's cash, posted once per chargeback
    (`provider_ref`: the provider's id of it) from the provider's `chargeback.created` event
    (`caas.billing.chargebacks`)."""
    return post(
        session,
        payment,
        kind="chargeback",
        key=_key(payment, f"chargeback-{provider_ref}"),
        lines=[Line(CHARGEBACKS, debit_minor=amount_minor), Line(CASH, credit_minor=amount_minor)],
        now=now,
    )


def balances(session: Session, *, customer_id: int | None = None) -> dict[str, int]:
    """Each account's balance (debits less credits, minor units), for one customer or all."""
    query = select(
        LedgerEntry.account, func.sum(LedgerEntry.debit_minor - LedgerEntry.credit_minor)
    ).group_by(LedgerEntry.account)
    if customer_id is not None:
        query = query.where(LedgerEntry.customer_id == customer_id)
    return {account: int(total) for account, total in session.execute(query).all()}


def customer_balance(session: Session, customer_id: int) -> int:
    """What the customer has paid the maker, net: money captured less refunded and charged
    back (the cash at the provider that came from them), in minor units."""
    return balances(session, customer_id=customer_id).get(CASH, 0)


def entries_of_payment(session: Session, payment_id: int) -> list[LedgerEntry]:
    query = select(LedgerEntry).where(LedgerEntry.payment_id == payment_id).order_by(LedgerEntry.id)
    return list(session.scalars(query))
