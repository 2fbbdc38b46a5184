"""Subscriptions over time: renewed at each period's end, retried, lapsed, cancelled, resumed.

A renewal is two outbox jobs, so the pending payment is committed before any money moves
(a crashed worker finds the same payment, and the provider the same keys, instead of charging
twice):

1. `store.subscription.renew`, at the period's end (or at a retry's time): decides whether to
   renew at all (cancelled at the period's end; refused by the purchase's eligibility rules:
   offer withdrawn, car off its maintenance plan, car sold...) and, if so, starts the payment
   of the offer's current price with the VAT of the customer's country, under a key derived
   from the subscription, the period and the attempt.
2. `store.subscription.charge`: authorises and captures that payment (the car already runs
   what a renewal extends); captured, the next period becomes an entitlement, the car gets a
   new configuration and the customer is told; failed, the subscription is `past_due` and
   tried again after `RETRY_AFTER_DAYS`, the customer told each time, then it lapses.

Each job carries the period and the attempt it is for: a duplicate or a late message finds
the subscription moved on and does nothing.

A feature that requires the official maintenance plan is not renewed while the car is off the
plan: the renewal fails like a declined card (reason `maintenance_overdue`, the customer told
why), and is tried again on the same schedule, so a service recorded within those days renews
it at the next attempt; otherwise it lapses. The option runs to the end of the paid period
either way (the car switches it off by itself at the end of its window).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.accounts.models import User
from caas.billing import methods, vat
from caas.billing import rules as billing_rules
from caas.billing import service as billing
from caas.billing.models import Payment
from caas.billing.provider import PaymentProvider
from caas.catalog.models import Feature
from caas.core.clock import Clock
from caas.core.errors import Conflict, NotFound
from caas.core.history import Actor, record
from caas.core.outbox import Handler, RetryLater, enqueue
from caas.ota.service import lock_vehicle, request_configuration
from caas.sales import service as sales
from caas.sales.models import Customer
from caas.store import eligibility, entitlements
from caas.store.models import Offer, Subscription
from caas.store.reminders import feature_name, stamp, start_reminding, tell
from caas.store.rules import SUBSCRIPTION, add_duration
from caas.vehicles import service as vehicles
from caas.vehicles.models import Vehicle

log = structlog.get_logger(__name__)

RENEW_TOPIC: Final = "store.subscription.renew"
CHARGE_TOPIC: Final = "store.subscription.charge"
# A failed renewal is tried again this many days after the period's end; after the last
# failed attempt the subscription lapses.
RETRY_AFTER_DAYS: Final = (1, 3, 5)
ACTOR: Final = Actor.system("subscriptions")
# States in which a subscription still renews.
RENEWING: Final = ("active", "past_due")


def _move(
    session: Session,
    subscription: Subscription,
    to_state: str,
    *,
    event: str,
    actor: Actor,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    """Change the state (through `rules.SUBSCRIPTION`) or only record `event` when the state
    stays, with a history row either way."""
    from_state = subscription.state
    if to_state != from_state:
        SUBSCRIPTION.check(from_state, to_state)
        subscription.state = to_state
    subscription.updated_at = now
    record(
        session,
        at=now,
        actor=actor,
        subject_type="subscription",
        subject_id=subscription.id,
        customer_id=subscription.customer_id,
        event=event,
        from_state=from_state,
        to_state=to_state,
        details={
            "code": subscription.code,
            "period_end": subscription.current_period_end.isoformat(),
            **(details or {}),
        },
    )


def _lock(session: Session, subscription_id: int) -> Subscription | None:
    """The subscription, locked and read afresh, after its car's row (`lock_vehicle`): a
    renewal issues a configuration and a refusal by the car stops subscriptions, so both take
    the car first, then what it runs."""
    vehicle_id = session.scalar(
        select(Subscription.vehicle_id).where(Subscription.id == subscription_id)
    )
    if vehicle_id is not None:
        lock_vehicle(session, vehicle_id)
    return session.scalars(
        select(Subscription)
        .where(Subscription.id == subscription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


# --- scheduling ----------------------------------------------------------------------------


def next_attempt(subscription: Subscription) -> datetime:
    """When the subscription must next try to renew: its period's end, or a retry's time."""
    return subscription.next_attempt_at or subscription.current_period_end


def schedule_renewal(session: Session, subscription: Subscription, *, now: datetime) -> None:
    """Queue the next renewal attempt at its time; again for the same period and attempt is
    harmless (the dedupe key). The purchase that creates a subscription may call it; the
    reminders' sweep queues any that nobody did (`plan_due_renewals`)."""
    period_end = subscription.current_period_end
    enqueue(
        session,
        topic=RENEW_TOPIC,
        payload={
            "subscription_id": subscription.id,
            "period_end": period_end.isoformat(),
            "attempt": subscription.attempts,
        },
        dedupe_key=f"{RENEW_TOPIC}:{subscription.id}:{stamp(period_end)}:{subscription.attempts}",
        now=now,
        run_after=next_attempt(subscription),
    )
    start_reminding(session, now=now)


def plan_due_renewals(session: Session, *, until: datetime, now: datetime) -> int:
    """Queue the renewal of every renewing subscription whose next attempt falls before
    `until` (already queued ones stay queued once). Returns how many were looked at."""
    due = list(
        session.scalars(
            select(Subscription).where(
                Subscription.state.in_(RENEWING),
                or_(
                    Subscription.next_attempt_at <= until,
                    Subscription.next_attempt_at.is_(None)
                    & (Subscription.current_period_end <= until),
                ),
            )
        )
    )
    for subscription in due:
        schedule_renewal(session, subscription, now=now)
    return len(due)


# --- renewing ------------------------------------------------------------------------------


def _renewal_lines(
    session: Session, offer: Offer, feature: Feature, customer: Customer, *, now: datetime
) -> list[billing_rules.LineDraft]:
    """The offer's current price with the VAT in force today in the customer's country."""
    rate = vat.rate_at(session, customer.country, now)
    description = f"{feature_name(feature, customer)}: subscription renewal ({offer.duration})"
    return [billing_rules.priced_line(description, offer.net_minor, rate)]


# Eligibility reasons a renewal names in its message; any other is "not_eligible".
NAMED_REFUSALS: Final = frozenset({"withdrawn", "maintenance_overdue"})


def _refusal(
    session: Session,
    offer: Offer,
    feature: Feature,
    vehicle: Vehicle,
    customer: Customer,
    now: datetime,
) -> str | None:
    """Why this renewal may not be charged now (None: it may), by the same rules as a purchase
    (`caas.store.eligibility`): the option withdrawn, the car off its maintenance plan, the car
    sold, a prerequisite gone..."""
    refused = eligibility.refusals(
        session, vehicle=vehicle, feature=feature, offer=offer, customer=customer, at=now
    )
    if not refused:
        return None
    reasons = [refusal.reason for refusal in refused]
    return next((reason for reason in reasons if reason in NAMED_REFUSALS), "not_eligible")


def attempt_renewal(
    session: Session, *, subscription_id: int, period_end: datetime, attempt: int, now: datetime
) -> Payment | None:
    """The first job of a renewal (see the module's docstring): ends a subscription cancelled
    at its period's end, fails a renewal that may not be charged, or starts its payment and
    queues the charge. Returns the payment started, if any."""
    subscription = _lock(session, subscription_id)
    if (
        subscription is None
        or subscription.state not in RENEWING
        or subscription.current_period_end != period_end
        or subscription.attempts != attempt
    ):
        return None  # a duplicate or late message: the subscription has moved on
    customer = session.get_one(Customer, subscription.customer_id)
    offer = session.get_one(Offer, subscription.offer_id)
    feature = session.get_one(Feature, offer.feature_id)
    if subscription.cancel_at_period_end:
        _end(session, subscription, customer, feature, now=now)
        return None
    vehicle = session.get_one(Vehicle, subscription.vehicle_id)
    refusal = _refusal(session, offer, feature, vehicle, customer, now)
    if refusal is not None:
        _renewal_failed(session, subscription, customer, feature, reason=refusal, now=now)
        return None
    # The customer's default card when they keep one; the charge carries it, so its retries
    # present the provider the same card whatever changes meanwhile.
    card = methods.charge_token(
        session, customer_id=customer.id, stored=subscription.payment_method
    )
    if card is None:
        _renewal_failed(
            session, subscription, customer, feature, reason="no_payment_method", now=now
        )
        return None
    payment = billing.begin_store_payment(
        session,
        customer_id=customer.id,
        kind="renewal",
        lines=_renewal_lines(session, offer, feature, customer, now=now),
        currency=offer.currency,
        country=customer.country,
        payment_method=card,
        idempotency_key=f"renewal:{subscription.id}:{stamp(period_end)}:{attempt}",
        actor=ACTOR,
        now=now,
        details={"subscription_id": subscription.id, "attempt": attempt},
    )
    enqueue(
        session,
        topic=CHARGE_TOPIC,
        payload={
            "subscription_id": subscription.id,
            "payment_id": payment.id,
            "period_end": period_end.isoformat(),
            "attempt": attempt,
            "card": card,
        },
        dedupe_key=f"{CHARGE_TOPIC}:{payment.id}",
        now=now,
    )
    return payment


def charge_renewal(
    session: Session,
    *,
    subscription_id: int,
    payment_id: int,
    period_end: datetime,
    attempt: int,
    provider: PaymentProvider,
    now: datetime,
    card: str | None = None,
) -> Subscription | None:
    """The second job of a renewal: authorise and capture its payment (with the `card` its
    first job chose), then renew or fail. Raises `RetryLater` while the provider has not
    settled it (the same keys are used again)."""
    subscription = _lock(session, subscription_id)
    if (
        subscription is None
        or subscription.state not in RENEWING
        or subscription.current_period_end != period_end
        or subscription.attempts != attempt
    ):
        return None
    payment = session.get_one(Payment, payment_id)
    payment = billing.authorise_payment(
        session,
        payment,
        payment_method=card or subscription.payment_method,
        provider=provider,
        actor=ACTOR,
        now=now,
    )
    if payment.state == "authorised":
        payment = billing.capture_payment(session, payment, provider=provider, actor=ACTOR, now=now)
    customer = session.get_one(Customer, subscription.customer_id)
    offer = session.get_one(Offer, subscription.offer_id)
    feature = session.get_one(Feature, offer.feature_id)
    if payment.state == "captured":
        _renewed(session, subscription, customer, offer, feature, payment, attempt=attempt, now=now)
    elif payment.state == "failed":
        reason = payment.failure_code or "declined"
        _renewal_failed(session, subscription, customer, feature, reason=reason, now=now)
    else:
        raise RetryLater(f"renewal payment {payment.id} is {payment.state} at the provider")
    return subscription


def _renewed(
    session: Session,
    subscription: Subscription,
    customer: Customer,
    offer: Offer,
    feature: Feature,
    payment: Payment,
    *,
    attempt: int,
    now: datetime,
) -> None:
    """Paid: the next period as an entitlement, one new configuration, the customer told.

    On time, the next period follows the last one; after a failed attempt it starts when paid,
    so the customer never pays for days the car did not run the option."""
    vehicle = session.get_one(Vehicle, subscription.vehicle_id)
    start = (
        subscription.current_period_end
        if attempt == 0
        else max(now, subscription.current_period_end)
    )
    end = add_duration(start, offer.duration)
    entitlement = entitlements.grant(
        session,
        vehicle=vehicle,
        feature=feature,
        source="subscription",
        valid_from=start,
        valid_until=end,
        state="active",
        customer_id=customer.id,
        offer_id=offer.id,
        subscription_id=subscription.id,
        actor=ACTOR,
        now=now,
    )
    subscription.current_period_start = start
    subscription.current_period_end = end
    subscription.attempts = 0
    subscription.next_attempt_at = None
    _move(
        session,
        subscription,
        "active",
        event="subscription.renewed",
        actor=ACTOR,
        now=now,
        details={"payment_id": payment.id, "entitlement_id": entitlement.id},
    )
    request_configuration(session, vehicle, reason="subscription.renewed", actor=ACTOR, now=now)
    tell(
        session,
        customer,
        kind="subscription.renewed",
        context={
            "feature": feature_name(feature, customer),
            "vin": vehicle.vin,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "period_end": end.isoformat(),
        },
        dedupe_key=f"subscription.renewed:{subscription.id}:{stamp(end)}",
        now=now,
    )
    schedule_renewal(session, subscription, now=now)


def _renewal_failed(
    session: Session,
    subscription: Subscription,
    customer: Customer,
    feature: Feature,
    *,
    reason: str,
    now: datetime,
) -> None:
    """Not renewed this time: `past_due` and tried again later, or lapsed after the last try;
    the customer is told either way, with the reason."""
    attempt = subscription.attempts
    period_end = subscription.current_period_end
    vehicle_vin = session.get_one(Vehicle, subscription.vehicle_id).vin
    context: dict[str, Any] = {
        "feature": feature_name(feature, customer),
        "vin": vehicle_vin,
        "reason": reason,
        "period_end": period_end.isoformat(),
    }
    if attempt < len(RETRY_AFTER_DAYS):
        subscription.attempts = attempt + 1
        subscription.next_attempt_at = period_end + timedelta(days=RETRY_AFTER_DAYS[attempt])
        _move(
            session,
            subscription,
            "past_due",
            event="subscription.renewal_failed",
            actor=ACTOR,
            now=now,
            details={
                "reason": reason,
                "attempt": attempt,
                "next_attempt_at": subscription.next_attempt_at.isoformat(),
            },
        )
        tell(
            session,
            customer,
            kind="subscription.renewal_failed",
            context={**context, "next_attempt_at": subscription.next_attempt_at.isoformat()},
            dedupe_key=f"subscription.renewal_failed:{subscription.id}:{stamp(period_end)}:{attempt}",
            now=now,
        )
        schedule_renewal(session, subscription, now=now)
        return
    subscription.next_attempt_at = None
    _move(
        session,
        subscription,
        "lapsed",
        event="subscription.lapsed",
        actor=ACTOR,
        now=now,
        details={"reason": reason, "attempt": attempt},
    )
    tell(
        session,
        customer,
        kind="subscription.lapsed",
        context=context,
        dedupe_key=f"subscription.lapsed:{subscription.id}",
        now=now,
    )


def _end(
    session: Session,
    subscription: Subscription,
    customer: Customer,
    feature: Feature,
    *,
    now: datetime,
) -> None:
    """Cancelled by the customer, and the paid period is over."""
    _move(session, subscription, "cancelled", event="subscription.ended", actor=ACTOR, now=now)
    tell(
        session,
        customer,
        kind="subscription.ended",
        context={
            "feature": feature_name(feature, customer),
            "vin": session.get_one(Vehicle, subscription.vehicle_id).vin,
            "period_end": subscription.current_period_end.isoformat(),
        },
        dedupe_key=f"subscription.ended:{subscription.id}",
        now=now,
    )


# --- the customer's side -------------------------------------------------------------------


def owned_vehicle(session: Session, user: User, vin: str) -> tuple[Vehicle, Customer]:
    """The car and its owner when `user` owns it; anyone else gets the same 404 as for a car
    that does not exist."""
    vehicle = vehicles.get_vehicle_by_vin(session, vin)
    customer = sales.customer_of_user(session, user)
    if vehicle.owner_customer_id != customer.id:
        raise NotFound("no car with this VIN", code="vehicle.not_found")
    return vehicle, customer


def subscriptions_of(session: Session, *, user: User, vin: str) -> list[Subscription]:
    """The owner's subscriptions of this car, newest first."""
    vehicle, customer = owned_vehicle(session, user, vin)
    return list(
        session.scalars(
            select(Subscription)
            .where(Subscription.vehicle_id == vehicle.id, Subscription.customer_id == customer.id)
            .order_by(Subscription.id.desc())
        )
    )


def _owned(session: Session, user: User, subscription_id: int) -> Subscription:
    customer = sales.customer_of_user(session, user)
    subscription = _lock(session, subscription_id)
    if subscription is None or subscription.customer_id != customer.id:
        raise NotFound("no such subscription", code="subscription.not_found")
    return subscription


def cancel(session: Session, *, user: User, subscription_id: int, now: datetime) -> Subscription:
    """The customer stops a subscription: an active one runs to the end of its paid period
    (the offer's `end_of_period` policy: nothing is refunded) and can be resumed until then;
    a past-due one stops now (there is no paid period left, and no retry is charged)."""
    subscription = _owned(session, user, subscription_id)
    actor = actor_of(user)
    if subscription.state == "active":
        if not subscription.cancel_at_period_end:
            subscription.cancel_at_period_end = True
            _move(
                session,
                subscription,
                "active",
                event="subscription.cancel_requested",
                actor=actor,
                now=now,
            )
    elif subscription.state == "past_due":
        subscription.next_attempt_at = None
        _move(
            session, subscription, "cancelled", event="subscription.cancelled", actor=actor, now=now
        )
    else:
        raise Conflict(
            f"this subscription is {subscription.state} already",
            code="subscription.not_renewing",
            state=subscription.state,
        )
    return subscription


def resume(session: Session, *, user: User, subscription_id: int, now: datetime) -> Subscription:
    """Undo a cancellation before the paid period ends: it renews again as before."""
    subscription = _owned(session, user, subscription_id)
    if subscription.state != "active" or now >= subscription.current_period_end:
        raise Conflict(
            "this subscription has ended: buy the option again",
            code="subscription.ended",
            state=subscription.state,
        )
    if subscription.cancel_at_period_end:
        subscription.cancel_at_period_end = False
        _move(
            session,
            subscription,
            "active",
            event="subscription.resumed",
            actor=actor_of(user),
            now=now,
        )
        schedule_renewal(session, subscription, now=now)
    return subscription


def follow_payment_method(
    session: Session,
    *,
    customer_id: int,
    token: str,
    only_from: Sequence[str] | None,
    card: str,
    actor: Actor,
    now: datetime,
) -> int:
    """The customer's default card changed (`caas.billing.methods`): their subscriptions that
    still renew are charged to `token` from now on (only those set to a token in `only_from`,
    when given), each with a history row naming the `card`. Returns how many moved."""
    query = (
        select(Subscription)
        .where(
            Subscription.customer_id == customer_id,
            Subscription.state.in_(RENEWING),
            Subscription.payment_method != token,
        )
        .order_by(Subscription.id)
        .with_for_update()
    )
    if only_from is not None:
        query = query.where(Subscription.payment_method.in_(only_from))
    moved = list(session.scalars(query))
    for subscription in moved:
        subscription.payment_method = token
        _move(
            session,
            subscription,
            subscription.state,
            event="subscription.payment_method_changed",
            actor=actor,
            now=now,
            details={"card": card},
        )
    return len(moved)


# --- the jobs ------------------------------------------------------------------------------


def handlers(provider: Callable[[], PaymentProvider], clock: Clock) -> dict[str, Handler]:
    """The renewal's two jobs; `provider()` is the payment provider's client they share (one
    for every renewal, never closed by a job: `caas.billing.provider.SharedProvider`)."""

    def renew(session: Session, payload: dict[str, Any]) -> None:
        attempt_renewal(
            session,
            subscription_id=int(payload["subscription_id"]),
            period_end=datetime.fromisoformat(payload["period_end"]),
            attempt=int(payload["attempt"]),
            now=clock.now(),
        )

    def charge(session: Session, payload: dict[str, Any]) -> None:
        charge_renewal(
            session,
            subscription_id=int(payload["subscription_id"]),
            payment_id=int(payload["payment_id"]),
            period_end=datetime.fromisoformat(payload["period_end"]),
            attempt=int(payload["attempt"]),
            provider=provider(),
            now=clock.now(),
            card=payload.get("card"),
        )

    return {RENEW_TOPIC: renew, CHARGE_TOPIC: charge}
