"""What the store does when a car leaves its owner: sold second-hand, or scrapped.

What belongs to the car stays with it: permanent options and the dealer's plan pass to the
next owner (`STAYS_WITH_CAR`). What belongs to the person leaves with them: their
subscriptions stop, their schedules are cancelled (an occurrence paid up front is refunded
by the schedules' own job), and their trials, windows, occurrences and metered options end
now. Each paid window cut short gives back what its offer's refund policy says
(`caas.ownership.rules.refund_minor`); the caller queues those refunds, which billing turns
into credit notes. A scrapped car keeps nothing: every right it had is revoked.

Like the rest of the store, this works in the caller's transaction and issues no
configuration: the caller signs the car's next one once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing.models import Payment
from caas.core.history import Actor, record
from caas.core.outbox import cancel, enqueue
from caas.ownership.rules import STAYS_WITH_CAR, refund_minor
from caas.store import entitlements, schedules
from caas.store.models import (
    Entitlement,
    Occurrence,
    Offer,
    Purchase,
    PurchaseLine,
    Schedule,
    Subscription,
)
from caas.store.rules import COUNTING_STATES, SUBSCRIPTION
from caas.store.subscriptions import RENEWING
from caas.vehicles.models import Vehicle


@dataclass(frozen=True)
class Refund:
    """Money to give back to the previous owner for a window cut short."""

    payment_id: int
    amount_minor: int
    currency: str
    entitlement_id: int
    code: str


@dataclass(frozen=True)
class Released:
    """What the store did for the car's change: what was ended, kept and refunded."""

    kept: list[str]  # codes of the options that stay with the car
    ended: list[str]  # codes of the previous owner's options that stopped
    subscriptions: list[int]
    schedules: list[int]
    refunds: list[Refund]


def _paid_for(session: Session, entitlement: Entitlement) -> tuple[Payment, int] | None:
    """The captured payment that bought this window and the part of it that did (gross)."""
    if entitlement.purchase_id is not None:
        purchase = session.get_one(Purchase, entitlement.purchase_id)
        line = session.scalars(
            select(PurchaseLine).where(PurchaseLine.entitlement_id == entitlement.id)
        ).first()
        if purchase.payment_id is None or line is None:
            return None
        payment = session.get_one(Payment, purchase.payment_id)
        return (payment, line.gross_minor) if payment.state == "captured" else None
    if entitlement.occurrence_id is not None:
        occurrence = session.get_one(Occurrence, entitlement.occurrence_id)
        if occurrence.payment_id is None:
            return None
        payment = session.get_one(Payment, occurrence.payment_id)
        return (payment, payment.amount_minor) if payment.state == "captured" else None
    if entitlement.subscription_id is not None:
        # A renewed period: the renewal's payment (its key names the subscription).
        renewal = session.scalars(
            select(Payment)
            .where(
                Payment.kind == "renewal",
                Payment.customer_id == entitlement.customer_id,
                Payment.state == "captured",
                Payment.idempotency_key.startswith(f"renewal:{entitlement.subscription_id}:"),
            )
            .order_by(Payment.captured_at.desc(), Payment.id.desc())
        ).first()
        return (renewal, renewal.amount_minor) if renewal is not None else None
    return None


def _refund_of(session: Session, entitlement: Entitlement, *, at: datetime) -> Refund | None:
    if entitlement.offer_id is None:
        return None
    paid = _paid_for(session, entitlement)
    if paid is None:
        return None
    payment, gross = paid
    offer = session.get_one(Offer, entitlement.offer_id)
    amount = refund_minor(
        offer.refund_policy,
        paid_minor=gross,
        valid_from=entitlement.valid_from,
        valid_until=entitlement.valid_until,
        at=at,
    )
    amount = min(amount, payment.amount_minor - payment.refunded_minor)
    if amount <= 0:
        return None
    return Refund(payment.id, amount, payment.currency, entitlement.id, entitlement.code)


def _stop_subscriptions(
    session: Session,
    vehicle: Vehicle,
    customer_id: int,
    *,
    reason: str,
    actor: Actor,
    now: datetime,
) -> list[int]:
    stopped = []
    for subscription in session.scalars(
        select(Subscription)
        .where(
            Subscription.vehicle_id == vehicle.id,
            Subscription.customer_id == customer_id,
            Subscription.state.in_(RENEWING),
        )
        .with_for_update()
    ):
        previous = subscription.state
        SUBSCRIPTION.check(previous, "cancelled")
        subscription.state = "cancelled"
        subscription.next_attempt_at = None
        subscription.updated_at = now
        record(
            session,
            at=now,
            actor=actor,
            subject_type="subscription",
            subject_id=subscription.id,
            customer_id=subscription.customer_id,
            event="subscription.cancelled",
            from_state=previous,
            to_state="cancelled",
            details={"code": subscription.code, "vin": vehicle.vin, "reason": reason},
        )
        stopped.append(subscription.id)
    return stopped


def _cancel_schedules(
    session: Session, vehicle: Vehicle, customer_id: int, *, actor: Actor, now: datetime
) -> list[int]:
    """As the customer's own cancellation does (`schedules.cancel_schedule`): planned
    occurrences cancelled, one paid up front refunded by the schedules' refund job."""
    cancelled = []
    for schedule in session.scalars(
        select(Schedule)
        .where(
            Schedule.vehicle_id == vehicle.id,
            Schedule.customer_id == customer_id,
            Schedule.state == "active",
        )
        .with_for_update()
    ):
        schedules._set_state(session, schedule, "cancelled", now=now, actor=actor)
        for occurrence in session.scalars(
            select(Occurrence)
            .where(Occurrence.schedule_id == schedule.id, Occurrence.state == "planned")
            .with_for_update()
        ):
            schedules._move(session, occurrence, schedule, "cancelled", actor=actor, now=now)
            cancel(session, dedupe_key=f"{schedules.START_TOPIC}:{occurrence.id}", now=now)
            if occurrence.payment_id is not None:
                enqueue(
                    session,
                    topic=schedules.REFUND_TOPIC,
                    payload={"occurrence_id": occurrence.id},
                    dedupe_key=f"{schedules.REFUND_TOPIC}:{occurrence.id}",
                    now=now,
                )
        cancelled.append(schedule.id)
    return cancelled


def _counting(session: Session, vehicle: Vehicle) -> list[Entitlement]:
    return list(
        session.scalars(
            select(Entitlement)
            .where(Entitlement.vehicle_id == vehicle.id, Entitlement.state.in_(COUNTING_STATES))
            .order_by(Entitlement.id)
            .with_for_update()
        )
    )


def hand_over(
    session: Session,
    vehicle: Vehicle,
    *,
    previous_owner_id: int,
    new_owner_id: int,
    actor: Actor,
    now: datetime,
) -> Released:
    """The car passes from `previous_owner_id` to `new_owner_id` at `now`."""
    kept: list[str] = []
    ended: list[str] = []
    refunds: list[Refund] = []
    stopped = _stop_subscriptions(
        session, vehicle, previous_owner_id, reason="car_sold", actor=actor, now=now
    )
    cancelled = _cancel_schedules(session, vehicle, previous_owner_id, actor=actor, now=now)
    for entitlement in _counting(session, vehicle):
        if entitlement.source in STAYS_WITH_CAR:
            entitlement.customer_id = new_owner_id
            entitlement.updated_at = now
            record(
                session,
                at=now,
                actor=actor,
                subject_type=entitlements.SUBJECT,
                subject_id=entitlement.id,
                customer_id=new_owner_id,
                event="entitlement.transferred",
                to_state=entitlement.state,
                details={"vehicle_id": vehicle.id, "code": entitlement.code},
            )
            kept.append(entitlement.code)
            continue
        refund = _refund_of(session, entitlement, at=now)
        if refund is not None:
            refunds.append(refund)
        entitlements.end(session, entitlement, at=now, actor=actor, now=now)
        ended.append(entitlement.code)
    return Released(sorted(set(kept)), sorted(set(ended)), stopped, cancelled, refunds)


def retire(session: Session, vehicle: Vehicle, *, actor: Actor, now: datetime) -> Released:
    """The car is scrapped: its owner's subscriptions and schedules stop as for a sale, and
    every right the car had is revoked (so no sweep ever signs for it again)."""
    owner = vehicle.owner_customer_id
    stopped: list[int] = []
    cancelled: list[int] = []
    if owner is not None:
        stopped = _stop_subscriptions(
            session, vehicle, owner, reason="car_scrapped", actor=actor, now=now
        )
        cancelled = _cancel_schedules(session, vehicle, owner, actor=actor, now=now)
    refunds: list[Refund] = []
    ended: list[str] = []
    for entitlement in _counting(session, vehicle):
        if entitlement.source not in STAYS_WITH_CAR:
            refund = _refund_of(session, entitlement, at=now)
            if refund is not None:
                refunds.append(refund)
        entitlements.revoke(session, entitlement, reason="car_scrapped", actor=actor, now=now)
        ended.append(entitlement.code)
    return Released([], sorted(set(ended)), stopped, cancelled, refunds)
