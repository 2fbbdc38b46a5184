"""The rules of consent: reading a customer's choices, changing them, their history, and
asking them in bulk or for one use."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.core.errors import InvalidInput
from caas.core.history import Actor, HistoryEntry, record
from caas.privacy.models import Consent
from caas.privacy.rules import PURPOSES, SERVICE, Purpose


@dataclass(frozen=True, slots=True)
class ConsentState:
    """A customer's answer for one purpose; `changed_at` is None while they never chose.
    `required`: the service needs it (`service`), so it is always granted."""

    purpose: Purpose
    granted: bool
    changed_at: datetime | None
    required: bool = False


def _rows(session: Session, customer_id: int, *, lock: bool = False) -> dict[str, Consent]:
    query = select(Consent).where(Consent.customer_id == customer_id)
    if lock:
        query = query.with_for_update()
    return {row.purpose: row for row in session.scalars(query)}


def consents_of(session: Session, customer_id: int) -> list[ConsentState]:
    """Every purpose with the customer's answer, in `PURPOSES` order; off when never given."""
    rows = _rows(session, customer_id)
    return [_state(purpose, rows.get(purpose)) for purpose in PURPOSES]


def _state(purpose: Purpose, row: Consent | None) -> ConsentState:
    if purpose == SERVICE:
        return ConsentState(purpose, granted=True, changed_at=None, required=True)
    if row is None:
        return ConsentState(purpose, granted=False, changed_at=None)
    return ConsentState(purpose, granted=row.granted, changed_at=row.changed_at)


def set_consents(
    session: Session,
    *,
    customer_id: int,
    choices: Mapping[Purpose, bool],
    actor: Actor,
    now: datetime,
) -> list[ConsentState]:
    """Record the customer's answers; each real change leaves `consent.granted` or
    `consent.withdrawn` in their file. Answering what is already recorded changes nothing, so
    sending the same choices twice is harmless. Withdrawing stops the storing at once: the
    ingest asks `granted_purposes` for every batch."""
    if SERVICE in choices:
        raise InvalidInput(
            "the service needs this data to run; it is not a choice",
            field=SERVICE,
            code="consent.service_required",
        )
    rows = _rows(session, customer_id, lock=True)
    for purpose, granted in choices.items():
        row = rows.get(purpose)
        if (row.granted if row is not None else False) == granted:
            continue
        before = None if row is None else _word(row.granted)
        if row is None:
            row = Consent(customer_id=customer_id, purpose=purpose, granted=granted, changed_at=now)
            session.add(row)
            rows[purpose] = row
        else:
            row.granted = granted
            row.changed_at = now
        record(
            session,
            at=now,
            actor=actor,
            subject_type="customer",
            subject_id=customer_id,
            customer_id=customer_id,
            event="consent.granted" if granted else "consent.withdrawn",
            from_state=before,
            to_state=_word(granted),
            details={"purpose": purpose},
        )
    session.flush()
    return [_state(purpose, rows.get(purpose)) for purpose in PURPOSES]


def _word(granted: bool) -> str:
    return "granted" if granted else "withdrawn"


def granted_purposes(
    session: Session, customer_ids: Collection[int]
) -> dict[int, frozenset[Purpose]]:
    """For each customer, the purposes they consent to now (one query for all of them);
    customers who consented to nothing are left out."""
    if not customer_ids:
        return {}
    query = select(Consent.customer_id, Consent.purpose).where(
        Consent.customer_id.in_(set(customer_ids)), Consent.granted.is_(True)
    )
    found: dict[int, set[Purpose]] = {}
    for customer_id, purpose in session.execute(query):
        if purpose in PURPOSES:
            found.setdefault(customer_id, set()).add(purpose)
    return {customer_id: frozenset(purposes) for customer_id, purposes in found.items()}


def may_use(session: Session, customer_id: int | None, purpose: Purpose) -> bool:
    """Whether the customer's data may be used for `purpose` now (read at each use, so a
    withdrawal counts from the next use on). A car without an owner has no one to consent."""
    if purpose == SERVICE:
        return True
    if customer_id is None:
        return False
    return purpose in granted_purposes(session, [customer_id]).get(customer_id, frozenset())


def consent_history(session: Session, customer_id: int) -> list[HistoryEntry]:
    """Every change of the customer's consents, oldest first."""
    query = (
        select(HistoryEntry)
        .where(
            HistoryEntry.customer_id == customer_id,
            HistoryEntry.event.in_(("consent.granted", "consent.withdrawn")),
        )
        .order_by(HistoryEntry.at, HistoryEntry.id)
    )
    return list(session.scalars(query))
