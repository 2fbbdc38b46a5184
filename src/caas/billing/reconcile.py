"""Reconciliation: the ledger's money movements beside the provider's settlement report.

Every movement of the cash at the provider is compared: captures, refunds and chargebacks
(money the card's bank took back, which the ledger learns from the provider's event; a
chargeback the event never brought is a difference like any other). Both sides are summed per
payment reference and movement, so several partial refunds or chargebacks of one payment
compare as their total; every reference found on one side only, or with another amount, is
one difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caas.billing import ledger
from caas.billing.models import LedgerEntry
from caas.core.settings import Settings
from caas.protocol.payments import API_KEY_HEADER, Settlement

Movement = tuple[str, str, str]  # (kind, reference, currency)
# The ledger's postings that move the cash at the provider, named as the settlements are.
SETTLED_KINDS: Final = ("capture", "refund", "chargeback")


@dataclass(frozen=True, order=True)
class Difference:
    """One movement the two sides disagree on; `None` on the side that lacks it."""

    kind: str
    reference: str
    currency: str
    ledger_minor: int | None
    provider_minor: int | None

    def describe(self) -> str:
        where = f"{self.kind} {self.reference}"
        if self.ledger_minor is None:
            return (
                f"{where}: missing in the ledger (provider {self.provider_minor} {self.currency})"
            )
        if self.provider_minor is None:
            return f"{where}: missing at the provider (ledger {self.ledger_minor} {self.currency})"
        return (
            f"{where}: amount mismatch (ledger {self.ledger_minor}, "
            f"provider {self.provider_minor} {self.currency})"
        )


def ledger_movements(session: Session, *, day: date | None = None) -> dict[Movement, int]:
    """Money through the provider by the ledger: cash debited by captures, credited by
    refunds and chargebacks, per (kind, reference, currency); only postings of `day` (UTC)
    when given."""
    amount = func.sum(LedgerEntry.debit_minor + LedgerEntry.credit_minor)
    query = (
        select(LedgerEntry.kind, LedgerEntry.reference, LedgerEntry.currency, amount)
        .where(LedgerEntry.account == ledger.CASH, LedgerEntry.kind.in_(SETTLED_KINDS))
        .group_by(LedgerEntry.kind, LedgerEntry.reference, LedgerEntry.currency)
    )
    if day is not None:
        start = datetime.combine(day, time(), tzinfo=UTC)
        query = query.where(
            LedgerEntry.posted_at >= start, LedgerEntry.posted_at < start + timedelta(days=1)
        )
    return {
        (kind, ref, currency): int(total) for kind, ref, currency, total in session.execute(query)
    }


def provider_movements(settlements: Iterable[Settlement]) -> dict[Movement, int]:
    totals: dict[Movement, int] = defaultdict(int)
    for settlement in settlements:
        totals[(settlement.kind, settlement.reference, settlement.currency)] += (
            settlement.amount_minor
        )
    return dict(totals)


def differences(
    in_ledger: dict[Movement, int], at_provider: dict[Movement, int]
) -> list[Difference]:
    """Every movement missing on one side or with another amount, sorted."""
    return sorted(
        Difference(kind, reference, currency, in_ledger.get(key), at_provider.get(key))
        for key in in_ledger.keys() | at_provider.keys()
        for kind, reference, currency in [key]
        if in_ledger.get(key) != at_provider.get(key)
    )


def reconcile(
    session: Session, settlements: Iterable[Settlement], *, day: date | None = None
) -> list[Difference]:
    """The ledger against the provider's settlement report (of `day`, or all)."""
    return differences(ledger_movements(session, day=day), provider_movements(settlements))


def fetch_settlements(settings: Settings, *, day: date | None = None) -> list[Settlement]:
    """The provider's settlement report (`GET /v1/settlements`: captures, refunds and
    chargebacks), of one UTC day or all."""
    params = {"date": day.isoformat()} if day is not None else {}
    response = httpx.get(
        f"{settings.payment_url.rstrip('/')}/v1/settlements",
        params=params,
        headers={API_KEY_HEADER: settings.payment_api_key},
        timeout=settings.payment_timeout_seconds,
    )
    response.raise_for_status()
    return [Settlement.model_validate(item) for item in response.json()]
