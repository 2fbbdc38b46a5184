"""Planned and recurring windows of an option, in the customer's time zone, and their starts.

A `Schedule` is a window of local wall-clock times (its first occurrence) and a recurrence:
once, every year (winter traction, 1 December 00:00 to 28 February 24:00) or every week (power
boost, Saturday 08:00 to Sunday 22:00). Each occurrence's local start and end are converted to
UTC with the zone's rules of that day, so a weekly 08:00 start in Madrid stays 08:00 on the
customer's clock across the daylight-saving change (06:00 UTC in summer, 07:00 UTC in winter).
A wall-clock time the change skips (02:30 on the last Sunday of March) is read with the offset
before the change (`fold=0`), so it lands one hour later on the clock.

Schedules use the option's `custom` offer (the customer's own dates, priced per started day):
it prices a window of any length, where a `window` offer would need one of exactly the right
duration. An occurrence costs the offer's price per started day of its window, at the price of
the day it is charged.

Occurrences are created ahead, one at a time: the next one is planned when the current one
starts (or fails), and a job at its start (`store.occurrence.start`) charges it (`each`), or
starts it when it was paid at checkout (`upfront`, once-only schedules). As for renewals, the
payment is started in one job and charged in another (`store.occurrence.charge`), so it is on
record before any money moves: a restarted worker repeats nothing and charges once. Paid, the
occurrence's window becomes an entitlement and the car gets a new configuration; a failed
charge means the occurrence does not start (`failed`), the customer is told, and the next one
is still planned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
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
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.history import Actor, record
from caas.core.outbox import Handler, RetryLater, cancel, enqueue
from caas.maintenance import service as maintenance
from caas.ota.service import lock_vehicle, request_configuration
from caas.sales import service as sales
from caas.sales.models import Customer
from caas.store import eligibility, entitlements
from caas.store.models import Occurrence, Offer, Schedule
from caas.store.offers import get_offer
from caas.store.reminders import feature_name, tell
from caas.store.rules import OCCURRENCE
from caas.store.subscriptions import owned_vehicle
from caas.vehicles.models import Vehicle

log = structlog.get_logger(__name__)

START_TOPIC: Final = "store.occurrence.start"
CHARGE_TOPIC: Final = "store.occurrence.charge"
REFUND_TOPIC: Final = "store.occurrence.refund"
RECURRENCES: Final = ("once", "yearly", "weekly")
CHARGES: Final = ("each", "upfront")
# How many occurrences a schedule shows ahead (planned ones and those still to be planned).
UPCOMING: Final = 3
ACTOR: Final = Actor.system("schedules")
DAY: Final = timedelta(days=1)


# --- the recurrence: pure ------------------------------------------------------------------


@dataclass(frozen=True)
class Recurrence:
    """A schedule's rule: the first window in local wall-clock time (naive datetimes, the end
    exclusive: "28 February 24:00" is 1 March 00:00) and how it repeats, in `zone`."""

    kind: str
    zone: str
    start: datetime
    end: datetime

    @classmethod
    def of(cls, schedule: Schedule) -> Recurrence:
        return cls(
            kind=schedule.recurrence,
            zone=schedule.timezone,
            start=datetime.combine(schedule.start_date, schedule.start_time),
            end=datetime.combine(schedule.end_date, schedule.end_time),
        )


def _shift_years(moment: datetime, years: int) -> datetime:
    """The same wall-clock moment `years` later; 29 February becomes the 28th when needed."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def local_window(rule: Recurrence, index: int) -> tuple[datetime, datetime]:
    """Occurrence number `index` (0 is the first) in local wall-clock time."""
    if rule.kind == "weekly":
        return rule.start + timedelta(weeks=index), rule.end + timedelta(weeks=index)
    if rule.kind == "yearly":
        return _shift_years(rule.start, index), _shift_years(rule.end, index)
    if index != 0:
        raise ValueError("a once-only schedule has one occurrence")
    return rule.start, rule.end


def to_utc(local: datetime, zone: str) -> datetime:
    """A local wall-clock time in `zone` as UTC, with that day's offset."""
    return local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def window(rule: Recurrence, index: int) -> tuple[datetime, datetime]:
    """Occurrence number `index` in UTC."""
    start, end = local_window(rule, index)
    return to_utc(start, rule.zone), to_utc(end, rule.zone)


def first_index_from(rule: Recurrence, after: datetime) -> int | None:
    """The first occurrence that starts at or after `after` (None: a once-only schedule whose
    one occurrence starts before)."""
    if rule.kind == "once":
        return 0 if window(rule, 0)[0] >= after else None
    first = to_utc(rule.start, rule.zone)
    if rule.kind == "weekly":
        index = max((after - first).days // 7 - 1, 0)
    else:
        index = max(after.year - first.year - 1, 0)
    while window(rule, index)[0] < after:
        index += 1
    return index


def windows_from(rule: Recurrence, after: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Every occurrence that starts at or after `after`, in order, in UTC."""
    index = first_index_from(rule, after)
    if index is None:
        return
    while True:
        yield window(rule, index)
        if rule.kind == "once":
            return
        index += 1


def started_days(starts_at: datetime, ends_at: datetime) -> int:
    """Days an occurrence is charged for: every started day (24 hours) of its window."""
    return max(math.ceil((ends_at - starts_at) / DAY), 1)


def check_rule(rule: Recurrence, *, charge: str) -> None:
    """Refuse a rule that cannot be planned, with the field at fault (422)."""
    try:
        ZoneInfo(rule.zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"unknown time zone {rule.zone!r}", field="timezone", code="schedule.unknown_timezone"
        ) from None
    if rule.end <= rule.start:
        raise InvalidInput(
            "the window must end after it starts",
            field="end_date",
            code="schedule.end_before_start",
        )
    if rule.kind == "weekly" and rule.end - rule.start > timedelta(weeks=1):
        raise InvalidInput(
            "a weekly window lasts at most 7 days",
            field="end_date",
            code="schedule.weekly_too_long",
        )
    if rule.kind == "yearly" and rule.end > _shift_years(rule.start, 1):
        raise InvalidInput(
            "a yearly window lasts at most a year",
            field="end_date",
            code="schedule.yearly_too_long",
        )
    if charge == "upfront" and rule.kind != "once":
        raise InvalidInput(
            "only a once-only schedule can be paid up front",
            field="charge",
            code="schedule.upfront_once_only",
        )


# --- planning ------------------------------------------------------------------------------


def _plan(
    session: Session, schedule: Schedule, starts_at: datetime, ends_at: datetime, *, now: datetime
) -> Occurrence:
    """The occurrence starting at `starts_at` (created once) and the job at its start."""
    session.execute(
        insert(Occurrence)
        .values(
            schedule_id=schedule.id,
            starts_at=starts_at,
            ends_at=ends_at,
            state="planned",
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["schedule_id", "starts_at"])
    )
    occurrence = session.scalars(
        select(Occurrence).where(
            Occurrence.schedule_id == schedule.id, Occurrence.starts_at == starts_at
        )
    ).one()
    enqueue(
        session,
        topic=START_TOPIC,
        payload={"occurrence_id": occurrence.id},
        dedupe_key=f"{START_TOPIC}:{occurrence.id}",
        now=now,
        run_after=starts_at,
    )
    return occurrence


def _plan_next(session: Session, schedule: Schedule, after: Occurrence, *, now: datetime) -> None:
    """Plan the occurrence after `after` of a recurring schedule (a once-only one finishes
    when its occurrence starts or fails)."""
    if schedule.state != "active" or schedule.recurrence == "once":
        return
    upcoming = next(
        windows_from(Recurrence.of(schedule), after.starts_at + timedelta(seconds=1)), None
    )
    if upcoming is not None:
        _plan(session, schedule, *upcoming, now=now)


def _set_state(
    session: Session, schedule: Schedule, state: str, *, now: datetime, actor: Actor = ACTOR
) -> None:
    record(
        session,
        at=now,
        actor=actor,
        subject_type="schedule",
        subject_id=schedule.id,
        customer_id=schedule.customer_id,
        event=f"schedule.{state}",
        from_state=schedule.state,
        to_state=state,
        details={"code": schedule.code},
    )
    schedule.state = state
    schedule.updated_at = now


def _move(
    session: Session,
    occurrence: Occurrence,
    schedule: Schedule,
    to_state: str,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    OCCURRENCE.check(occurrence.state, to_state)
    record(
        session,
        at=now,
        actor=actor,
        subject_type="occurrence",
        subject_id=occurrence.id,
        customer_id=schedule.customer_id,
        event=f"occurrence.{to_state}",
        from_state=occurrence.state,
        to_state=to_state,
        details={
            "schedule_id": schedule.id,
            "code": schedule.code,
            "starts_at": occurrence.starts_at.isoformat(),
            "ends_at": occurrence.ends_at.isoformat(),
            **(details or {}),
        },
    )
    occurrence.state = to_state
    occurrence.updated_at = now


def _lines(
    session: Session,
    offer: Offer,
    feature: Feature,
    customer: Customer,
    occurrence: Occurrence,
    *,
    now: datetime,
) -> list[billing_rules.LineDraft]:
    """The offer's price per started day with the VAT in force in the customer's country."""
    days = started_days(occurrence.starts_at, occurrence.ends_at)
    rate = vat.rate_at(session, customer.country, now)
    starts = f"{occurrence.starts_at:%Y-%m-%d %H:%M} UTC"
    description = f"{feature_name(feature, customer)}: {days} day(s) from {starts}"
    return [billing_rules.priced_line(description, offer.net_minor * days, rate)]


def _begin_payment(
    session: Session, schedule: Schedule, occurrence: Occurrence, *, card: str, now: datetime
) -> Payment:
    """The occurrence's payment, on record (committed by the job) before any money moves; its
    charge queued at once, with the `card` it takes. The key is the occurrence's: one payment
    per occurrence."""
    customer = session.get_one(Customer, schedule.customer_id)
    offer = session.get_one(Offer, schedule.offer_id)
    feature = session.get_one(Feature, offer.feature_id)
    payment = billing.begin_store_payment(
        session,
        customer_id=customer.id,
        kind="occurrence",
        lines=_lines(session, offer, feature, customer, occurrence, now=now),
        currency=offer.currency,
        country=customer.country,
        payment_method=card,
        idempotency_key=f"occurrence:{occurrence.id}",
        actor=ACTOR,
        now=now,
        details={"schedule_id": schedule.id, "occurrence_id": occurrence.id},
    )
    occurrence.payment_id = payment.id
    occurrence.updated_at = now
    enqueue(
        session,
        topic=CHARGE_TOPIC,
        payload={"occurrence_id": occurrence.id, "card": card},
        dedupe_key=f"{CHARGE_TOPIC}:{occurrence.id}",
        now=now,
    )
    return payment


# --- the customer's side -------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleRequest:
    """What the customer asks for: `end` may be midnight of the next day ("24:00")."""

    offer_id: int
    recurrence: str
    start: datetime
    end: datetime
    timezone: str | None
    charge: str
    payment_method: str


def _refuse_if_not_eligible(
    session: Session,
    vehicle: Vehicle,
    feature: Feature,
    offer: Offer,
    customer: Customer,
    now: datetime,
) -> None:
    """The same refusals as a purchase (`caas.store.eligibility`): 409 with the first reason."""
    refused = eligibility.refusals(
        session, vehicle=vehicle, feature=feature, offer=offer, customer=customer, at=now
    )
    if refused:
        first = refused[0]
        raise Conflict(
            eligibility.explain(first, customer.language),
            code=f"store.not_eligible.{first.reason}",
            refusals=[{"reason": r.reason, **r.details} for r in refused],
        )


def create_schedule(
    session: Session, *, user: User, vin: str, request: ScheduleRequest, now: datetime
) -> Schedule:
    """Plan an option for the owner's car; its first occurrence is the first window that starts
    from now. Paid up front, the payment is taken at once (by the worker, within a second)."""
    vehicle, customer = owned_vehicle(session, user, vin)
    offer = get_offer(session, request.offer_id)
    feature = session.get_one(Feature, offer.feature_id)
    if (
        offer.kind != "custom"
        or feature.platform_id != vehicle.platform_id
        or offer.country != customer.country
    ):
        raise InvalidInput(
            "plan an option with its own-dates (custom) offer for this car and your country",
            field="offer_id",
            code="schedule.not_a_custom_offer",
        )
    _refuse_if_not_eligible(session, vehicle, feature, offer, customer, now)
    zone = request.timezone or billing_rules.COUNTRY_ZONES.get(customer.country, "UTC")
    rule = Recurrence(kind=request.recurrence, zone=zone, start=request.start, end=request.end)
    check_rule(rule, charge=request.charge)
    first = next(windows_from(rule, now), None)
    if first is None:
        raise InvalidInput(
            "the window has already started", field="start_date", code="schedule.in_the_past"
        )
    schedule = Schedule(
        vehicle_id=vehicle.id,
        customer_id=customer.id,
        offer_id=offer.id,
        code=feature.code,
        recurrence=rule.kind,
        timezone=zone,
        start_date=rule.start.date(),
        start_time=rule.start.time(),
        end_date=rule.end.date(),
        end_time=rule.end.time(),
        charge=request.charge,
        payment_method=request.payment_method,
        state="active",
        created_at=now,
        updated_at=now,
    )
    session.add(schedule)
    session.flush()
    record(
        session,
        at=now,
        actor=actor_of(user),
        subject_type="schedule",
        subject_id=schedule.id,
        customer_id=customer.id,
        event="schedule.created",
        to_state="active",
        details={
            "code": feature.code,
            "recurrence": rule.kind,
            "timezone": zone,
            "charge": request.charge,
        },
    )
    occurrence = _plan(session, schedule, *first, now=now)
    if schedule.charge == "upfront":
        _begin_payment(session, schedule, occurrence, card=request.payment_method, now=now)
    return schedule


def _owned(session: Session, user: User, schedule_id: int) -> Schedule:
    customer = sales.customer_of_user(session, user)
    schedule = session.scalars(
        select(Schedule).where(Schedule.id == schedule_id).with_for_update()
    ).first()
    if schedule is None or schedule.customer_id != customer.id:
        raise NotFound("no such schedule", code="schedule.not_found")
    return schedule


def schedules_of(session: Session, *, user: User, vin: str) -> list[Schedule]:
    vehicle, customer = owned_vehicle(session, user, vin)
    return list(
        session.scalars(
            select(Schedule)
            .where(Schedule.vehicle_id == vehicle.id, Schedule.customer_id == customer.id)
            .order_by(Schedule.id.desc())
        )
    )


@dataclass(frozen=True)
class Upcoming:
    """An occurrence still to come or running: planned already (`occurrence`) or not yet."""

    starts_at: datetime
    ends_at: datetime
    occurrence: Occurrence | None

    @property
    def state(self) -> str:
        return self.occurrence.state if self.occurrence else "planned"


def upcoming(
    session: Session, schedule: Schedule, *, now: datetime, count: int = UPCOMING
) -> list[Upcoming]:
    """The schedule's next occurrences (running ones included): those planned, then the rule's."""
    stored = list(
        session.scalars(
            select(Occurrence)
            .where(
                Occurrence.schedule_id == schedule.id,
                Occurrence.ends_at > now,
                Occurrence.state.in_(("planned", "started")),
            )
            .order_by(Occurrence.starts_at)
        )
    )
    found = [Upcoming(o.starts_at, o.ends_at, o) for o in stored][:count]
    if schedule.state != "active" or len(found) >= count:
        return found
    after = found[-1].starts_at + timedelta(seconds=1) if found else now
    for starts_at, ends_at in windows_from(Recurrence.of(schedule), after):
        if len(found) >= count:
            break
        found.append(Upcoming(starts_at, ends_at, None))
    return found


def cancel_schedule(session: Session, *, user: User, schedule_id: int, now: datetime) -> Schedule:
    """The customer cancels a schedule: every occurrence still planned is cancelled (one paid
    up front is refunded); one already running runs to its end (custom dates are not refunded
    once active). Cancelling again changes nothing."""
    schedule = _owned(session, user, schedule_id)
    if schedule.state == "cancelled":
        return schedule
    if schedule.state != "active":
        raise Conflict("this schedule has finished", code="schedule.finished")
    actor = actor_of(user)
    _set_state(session, schedule, "cancelled", now=now, actor=actor)
    planned = session.scalars(
        select(Occurrence)
        .where(Occurrence.schedule_id == schedule.id, Occurrence.state == "planned")
        .with_for_update()
    )
    for occurrence in planned:
        _move(session, occurrence, schedule, "cancelled", actor=actor, now=now)
        cancel(session, dedupe_key=f"{START_TOPIC}:{occurrence.id}", now=now)
        if occurrence.payment_id is not None:
            enqueue(
                session,
                topic=REFUND_TOPIC,
                payload={"occurrence_id": occurrence.id},
                dedupe_key=f"{REFUND_TOPIC}:{occurrence.id}",
                now=now,
            )
    return schedule


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
    """The customer's default card changed (`caas.billing.methods`): their active schedules
    charge `token` from now on (only those set to a token in `only_from`, when given), each
    with a history row naming the `card`. Returns how many moved."""
    query = (
        select(Schedule)
        .where(
            Schedule.customer_id == customer_id,
            Schedule.state == "active",
            Schedule.payment_method != token,
        )
        .order_by(Schedule.id)
        .with_for_update()
    )
    if only_from is not None:
        query = query.where(Schedule.payment_method.in_(only_from))
    moved = list(session.scalars(query))
    for schedule in moved:
        schedule.payment_method = token
        schedule.updated_at = now
        record(
            session,
            at=now,
            actor=actor,
            subject_type="schedule",
            subject_id=schedule.id,
            customer_id=schedule.customer_id,
            event="schedule.payment_method_changed",
            details={"code": schedule.code, "card": card},
        )
    return len(moved)


# --- the jobs ------------------------------------------------------------------------------


def _lock(session: Session, occurrence_id: int) -> Occurrence | None:
    """The occurrence, locked and read afresh, after its car's row (`lock_vehicle`): starting
    it issues a configuration, so the car's row comes first as in every such transaction."""
    vehicle_id = session.scalar(
        select(Schedule.vehicle_id)
        .join(Occurrence, Occurrence.schedule_id == Schedule.id)
        .where(Occurrence.id == occurrence_id)
    )
    if vehicle_id is not None:
        lock_vehicle(session, vehicle_id)
    return session.scalars(
        select(Occurrence)
        .where(Occurrence.id == occurrence_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def _fail(
    session: Session, occurrence: Occurrence, schedule: Schedule, *, reason: str, now: datetime
) -> None:
    """The occurrence does not start; the customer is told why."""
    occurrence.failure_reason = reason
    _move(session, occurrence, schedule, "failed", actor=ACTOR, now=now, details={"reason": reason})
    customer = session.get_one(Customer, schedule.customer_id)
    feature = session.get_one(Feature, session.get_one(Offer, schedule.offer_id).feature_id)
    tell(
        session,
        customer,
        kind="occurrence.failed",
        context={
            "feature": feature_name(feature, customer),
            "vin": session.get_one(Vehicle, schedule.vehicle_id).vin,
            "starts_at": occurrence.starts_at.isoformat(),
            "ends_at": occurrence.ends_at.isoformat(),
            "timezone": schedule.timezone,
            "reason": reason,
        },
        dedupe_key=f"occurrence.failed:{occurrence.id}",
        now=now,
    )
    if schedule.recurrence == "once" and schedule.state == "active":
        _set_state(session, schedule, "finished", now=now)


def _start(session: Session, occurrence: Occurrence, schedule: Schedule, *, now: datetime) -> None:
    """Paid and due: its window becomes an entitlement and the car gets a new configuration."""
    vehicle = session.get_one(Vehicle, schedule.vehicle_id)
    offer = session.get_one(Offer, schedule.offer_id)
    entitlement = entitlements.grant(
        session,
        vehicle=vehicle,
        feature=session.get_one(Feature, offer.feature_id),
        source="occurrence",
        valid_from=occurrence.starts_at,
        valid_until=occurrence.ends_at,
        state="active",
        customer_id=schedule.customer_id,
        offer_id=offer.id,
        occurrence_id=occurrence.id,
        actor=ACTOR,
        now=now,
    )
    _move(
        session,
        occurrence,
        schedule,
        "started",
        actor=ACTOR,
        now=now,
        details={"entitlement_id": entitlement.id, "payment_id": occurrence.payment_id},
    )
    request_configuration(session, vehicle, reason="occurrence.started", actor=ACTOR, now=now)
    if schedule.recurrence == "once" and schedule.state == "active":
        _set_state(session, schedule, "finished", now=now)


def start_occurrence(session: Session, *, occurrence_id: int, now: datetime) -> Occurrence | None:
    """The job at an occurrence's start: start its payment (`each`), or start it if it was paid
    up front; plan the next one either way."""
    occurrence = _lock(session, occurrence_id)
    if occurrence is None or occurrence.state != "planned":
        return None
    schedule = session.get_one(Schedule, occurrence.schedule_id)
    if now >= occurrence.ends_at:
        # The worker was away for the whole window: nothing to start, nothing to charge.
        _fail(session, occurrence, schedule, reason="missed", now=now)
    elif schedule.charge == "each" and occurrence.payment_id is None:
        vehicle = session.get_one(Vehicle, schedule.vehicle_id)
        feature = session.get_one(Feature, session.get_one(Offer, schedule.offer_id).feature_id)
        if feature.requires_maintenance and not maintenance.car_follows_plan(
            session, vehicle, today=now.date()
        ):
            _fail(session, occurrence, schedule, reason="maintenance_overdue", now=now)
        else:
            # Charged without the customer: their default card when they keep one.
            card = methods.charge_token(
                session, customer_id=schedule.customer_id, stored=schedule.payment_method
            )
            if card is None:
                _fail(session, occurrence, schedule, reason="no_payment_method", now=now)
            else:
                _begin_payment(session, schedule, occurrence, card=card, now=now)
    elif occurrence.payment_id is not None:
        payment = session.get_one(Payment, occurrence.payment_id)
        if payment.state == "captured":
            _start(session, occurrence, schedule, now=now)
        # Otherwise its charge job is still at it and starts the occurrence once captured.
    _plan_next(session, schedule, occurrence, now=now)
    return occurrence


def charge_occurrence(
    session: Session,
    *,
    occurrence_id: int,
    provider: PaymentProvider,
    now: datetime,
    card: str | None = None,
) -> Occurrence | None:
    """Authorise and capture an occurrence's payment (with the `card` chosen when it began);
    captured and due, it starts; failed, it does not. Raises `RetryLater` while the provider
    has not settled the payment."""
    occurrence = _lock(session, occurrence_id)
    if occurrence is None or occurrence.state != "planned" or occurrence.payment_id is None:
        return None
    schedule = session.get_one(Schedule, occurrence.schedule_id)
    payment = session.get_one(Payment, occurrence.payment_id)
    payment = billing.authorise_payment(
        session,
        payment,
        payment_method=card or schedule.payment_method,
        provider=provider,
        actor=ACTOR,
        now=now,
    )
    if payment.state == "authorised":
        payment = billing.capture_payment(session, payment, provider=provider, actor=ACTOR, now=now)
    if payment.state == "failed":
        _fail(session, occurrence, schedule, reason=payment.failure_code or "declined", now=now)
    elif payment.state != "captured":
        raise RetryLater(f"occurrence payment {payment.id} is {payment.state} at the provider")
    elif now >= occurrence.starts_at:
        _start(session, occurrence, schedule, now=now)
    return occurrence


def refund_occurrence(
    session: Session, *, occurrence_id: int, provider: PaymentProvider, now: datetime
) -> None:
    """Give back what a cancelled occurrence was paid up front (a hold is released)."""
    occurrence = session.get_one(Occurrence, occurrence_id)
    if occurrence.state != "cancelled" or occurrence.payment_id is None:
        return
    payment = session.get_one(Payment, occurrence.payment_id)
    if payment.state == "authorised":
        billing.void_payment(
            session, payment, provider=provider, reason="schedule_cancelled", actor=ACTOR, now=now
        )
    elif payment.state == "captured" and payment.refunded_minor < payment.amount_minor:
        billing.refund_payment(
            session, payment, amount_minor=None, provider=provider, actor=ACTOR, now=now
        )


def handlers(provider: Callable[[], PaymentProvider], clock: Clock) -> dict[str, Handler]:
    """The occurrences' jobs; `provider()` is the payment provider's client they share (one
    for every occurrence, never closed by a job: `caas.billing.provider.SharedProvider`)."""

    def start(session: Session, payload: dict[str, Any]) -> None:
        start_occurrence(session, occurrence_id=int(payload["occurrence_id"]), now=clock.now())

    def charge(session: Session, payload: dict[str, Any]) -> None:
        charge_occurrence(
            session,
            occurrence_id=int(payload["occurrence_id"]),
            provider=provider(),
            now=clock.now(),
            card=payload.get("card"),
        )

    def refund(session: Session, payload: dict[str, Any]) -> None:
        refund_occurrence(
            session,
            occurrence_id=int(payload["occurrence_id"]),
            provider=provider(),
            now=clock.now(),
        )

    return {START_TOPIC: start, CHARGE_TOPIC: charge, REFUND_TOPIC: refund}


def local_time(moment: datetime, zone: str) -> datetime:
    """A UTC moment on the schedule's clock."""
    return moment.astimezone(ZoneInfo(zone))


def end_time_text(schedule: Schedule) -> tuple[date, str]:
    """The window's end as the customer wrote it: midnight of the next day is "24:00"."""
    if schedule.end_time == time(0, 0):
        return schedule.end_date - DAY, "24:00"
    return schedule.end_date, schedule.end_time.strftime("%H:%M")
