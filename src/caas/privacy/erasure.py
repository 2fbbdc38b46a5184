"""The customer erases their account: personal data anonymised, what the law keeps kept.

Refused while something still ties the person to the service (a car they own, an order on
its way, a subscription running, a payment in progress): they sell or transfer the car, or
wait for the order, first. Then, in one transaction:

- the customer's name, e-mail, phone, address, national id and birth date are replaced;
  the delivery addresses copied from them too;
- the login loses its password, tokens and e-mail (`caas.accounts.service.erase_login`): the
  old login fails from then on;
- every consent is withdrawn (with its history rows), the notifications deleted, saved cards
  removed, the telemetry and usage their cars sent while theirs deleted;
- the history keeps its events, with the person as actor anonymised and the values of their
  profile corrections dropped; the stored answers of their commands and their phones' labels
  go too;
- invoices and the ledger stay (tax law), and the `Erasure` row says so
  (`rules.RETENTION_NOTE`) with the numbers kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.orm import Session

from caas.accounts import service as accounts
from caas.accounts.models import User
from caas.accounts.security import verify_password
from caas.billing import rules as billing_rules
from caas.billing.models import Invoice, LedgerEntry, Payment
from caas.core.db import Base
from caas.core.errors import Conflict, Forbidden
from caas.core.history import Actor, HistoryEntry, record
from caas.core.idempotency import IdempotencyRecord
from caas.delivery.models import Delivery
from caas.notifications.models import Notification
from caas.privacy import service as consents
from caas.privacy.models import Erasure
from caas.privacy.rules import OPTIONAL_PURPOSES, RETENTION_NOTE
from caas.sales.models import Customer, Sale
from caas.sales.rules import ORDER
from caas.store.models import Subscription
from caas.store.rules import SUBSCRIPTION
from caas.vehicles.models import FeatureUsage, PhoneKey, TelemetrySample, Vehicle

ERASED_ACTOR_LABEL: Final = "erased customer"
# The idempotency operation of an erasure (the API and the portal form).
ERASE_OPERATION: Final = "account.erase"


def _open(machine_transitions: dict[str, frozenset[str]]) -> list[str]:
    """The states a thing can still leave: it is not over yet."""
    return [state for state, targets in machine_transitions.items() if targets]


def blockers(session: Session, customer_id: int) -> list[Conflict]:
    """Why the account cannot be erased now, most important first; empty when it can."""
    found: list[Conflict] = []
    vins = list(
        session.scalars(
            select(Vehicle.vin)
            .where(Vehicle.owner_customer_id == customer_id)
            .order_by(Vehicle.vin)
        )
    )
    if vins:
        found.append(
            Conflict(
                f"you still own the car {', '.join(vins)}: sell or transfer it first",
                code="erasure.owns_car",
                vins=vins,
            )
        )
    orders = list(
        session.scalars(
            select(Sale.number).where(
                Sale.customer_id == customer_id, Sale.state.in_(_open(ORDER.transitions))
            )
        )
    )
    if orders:
        found.append(
            Conflict(
                f"your order {', '.join(orders)} is still open: wait for it or cancel it first",
                code="erasure.open_order",
                orders=orders,
            )
        )
    running = session.scalar(
        select(func.count(Subscription.id)).where(
            Subscription.customer_id == customer_id,
            Subscription.state.in_(_open(SUBSCRIPTION.transitions)),
        )
    )
    if running:
        found.append(
            Conflict(
                "a subscription of yours is still running: cancel it first",
                code="erasure.open_subscription",
            )
        )
    paying = session.scalar(
        select(func.count(Payment.id)).where(
            Payment.customer_id == customer_id, Payment.state.in_(billing_rules.OPEN_STATES)
        )
    )
    if paying:
        found.append(
            Conflict(
                "a payment of yours is still in progress: wait until it is settled",
                code="erasure.payment_in_progress",
            )
        )
    return found


def erase_account(
    session: Session, *, customer: Customer, user: User, password: str, now: datetime
) -> Erasure:
    """Erase the customer's account (see the module's docstring); `password` confirms it is
    them. Forbidden for a wrong password, Conflict (the first blocker) while refused."""
    if not verify_password(user.password_hash, password):
        raise Forbidden(
            "the password does not match: nothing was erased",
            code="erasure.wrong_password",
            field="password",
        )
    refused = blockers(session, customer.id)
    if refused:
        raise refused[0]
    actor = Actor(kind="customer", label=ERASED_ACTOR_LABEL)
    consents.set_consents(
        session,
        customer_id=customer.id,
        choices=dict.fromkeys(OPTIONAL_PURPOSES, False),
        actor=actor,
        now=now,
    )
    _forget_car_data(session, customer.id)
    session.execute(delete(Notification).where(Notification.user_id == user.id))
    _remove_cards(session, customer.id, now)
    _anonymise_customer(session, customer)
    accounts.erase_login(session, user=user)
    _anonymise_history(session, customer.id, user.id)
    _forget_answers(session, user.id)
    session.execute(
        update(PhoneKey).where(PhoneKey.user_id == user.id).values(label=ERASED_ACTOR_LABEL)
    )
    kept = list(
        session.scalars(
            select(Invoice.number).where(Invoice.customer_id == customer.id).order_by(Invoice.id)
        )
    )
    ledger = session.scalar(
        select(func.count(LedgerEntry.id)).where(LedgerEntry.customer_id == customer.id)
    )
    erasure = Erasure(
        customer_id=customer.id,
        erased_at=now,
        retained={"reason": RETENTION_NOTE, "invoices": kept, "ledger_entries": ledger or 0},
    )
    session.add(erasure)
    record(
        session,
        at=now,
        actor=actor,
        subject_type="customer",
        subject_id=customer.id,
        customer_id=customer.id,
        event="account.erased",
        details={"retained": RETENTION_NOTE, "invoices": kept},
    )
    session.flush()
    return erasure


def _anonymise_customer(session: Session, customer: Customer) -> None:
    customer.first_name = "Erased"
    customer.last_name = f"customer {customer.id}"
    # Unique per country: the id keeps it so, and says what it is.
    customer.national_id = f"ERASED-{customer.id}"
    customer.email = f"erased-{customer.user_id}@erased.invalid"
    customer.phone = ""
    customer.street = ""
    customer.postal_code = ""
    customer.city = ""
    customer.birth_date = None
    sales = select(Sale.id).where(Sale.customer_id == customer.id)
    session.execute(
        update(Delivery)
        .where(Delivery.sale_id.in_(sales))
        .values(recipient=ERASED_ACTOR_LABEL, street="", postal_code="", city="")
    )


def _forget_car_data(session: Session, customer_id: int) -> None:
    """Delete what the cars sent while they were the person's: the cars they bought new and
    those whose history names them, from the first event naming them until another customer
    appears in the car's history (a car sold on is its new owner's from then on)."""
    bought = select(Vehicle.id).join(Sale, Sale.id == Vehicle.sale_id)
    named = select(HistoryEntry.subject_id).where(
        HistoryEntry.subject_type == "vehicle", HistoryEntry.customer_id == customer_id
    )
    cars = session.execute(
        select(Vehicle.id, Vehicle.vin).where(
            or_(
                Vehicle.id.in_(bought.where(Sale.customer_id == customer_id)),
                Vehicle.id.in_(named),
            )
        )
    ).all()
    for vehicle_id, vin in cars:
        of_car = (HistoryEntry.subject_type == "vehicle", HistoryEntry.subject_id == vehicle_id)
        since = session.scalar(
            select(func.min(HistoryEntry.at)).where(
                *of_car, HistoryEntry.customer_id == customer_id
            )
        )
        until_query = select(func.min(HistoryEntry.at)).where(
            *of_car, HistoryEntry.customer_id.is_not(None), HistoryEntry.customer_id != customer_id
        )
        if since is not None:
            until_query = until_query.where(HistoryEntry.at > since)
        until = session.scalar(until_query)
        samples = delete(TelemetrySample).where(TelemetrySample.vin == vin)
        usage = delete(FeatureUsage).where(FeatureUsage.vin == vin)
        if since is not None:
            samples = samples.where(TelemetrySample.at >= since)
            usage = usage.where(FeatureUsage.at >= since)
        if until is not None:
            samples = samples.where(TelemetrySample.at < until)
            usage = usage.where(FeatureUsage.at < until)
        session.execute(samples)
        session.execute(usage)


def _remove_cards(session: Session, customer_id: int, now: datetime) -> None:
    """Saved cards are never charged again (the table exists once billing keeps cards)."""
    cards = Base.metadata.tables.get("payment_methods")
    if isinstance(cards, Table):
        session.execute(
            update(cards)
            .where(cards.c.customer_id == customer_id, cards.c.removed_at.is_(None))
            .values(removed_at=now, is_default=False)
        )


def _forget_answers(session: Session, user_id: int) -> None:
    """Stored answers of their earlier commands (a correction's old and new values among
    them); the erasure's own stays until its answer is stored, so its retry still works."""
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.principal == f"user:{user_id}",
            IdempotencyRecord.operation != ERASE_OPERATION,
        )
    )


def _anonymise_history(session: Session, customer_id: int, user_id: int) -> None:
    session.execute(
        update(HistoryEntry)
        .where(HistoryEntry.actor_user_id == user_id)
        .values(actor_label=ERASED_ACTOR_LABEL, actor_user_id=None)
    )
    # A correction's old and new values are the person's data; which fields changed is not.
    for entry in session.scalars(
        select(HistoryEntry).where(
            HistoryEntry.customer_id == customer_id, HistoryEntry.event == "profile.corrected"
        )
    ):
        entry.details = {"fields": sorted(entry.details.get("changes", {}))}
