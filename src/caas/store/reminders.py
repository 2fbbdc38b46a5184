"""Reminders of the store: a trial about to end, a yearly plan about to renew, a service due.

They go out from one self-rescheduling outbox topic (`store.reminders`), built like the window
sweep (`caas.store.sweep`): one `SweepCursor` row ("reminders") numbers the runs, the message of
run N has the dedupe key `store.reminders:N` and carries N, so queuing the next run twice queues
it once and a stray message of an older run does nothing. Each run looks for what is due and
tells the customer with a notification dedupe key per reminded thing (the trial, the period,
the service's due point), so each reminder goes once however often the sweep runs, and a
restarted worker repeats none.

A reminder offers, it never charges: the end of a trial says how to buy the option, nothing
converts to a paid plan by itself.

The same run also queues any renewal a subscription is about to need
(`caas.store.subscriptions.plan_due_renewals`): a subscription created by a purchase is
renewed even if nobody queued its first renewal.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Final

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing import vat
from caas.catalog.models import Feature
from caas.core.clock import Clock
from caas.core.outbox import Handler, RetryLater
from caas.maintenance import service as maintenance
from caas.notifications.service import notify_user
from caas.sales.models import Customer
from caas.store import chains
from caas.store.models import Entitlement, Offer, Subscription, SweepCursor
from caas.store.offers import feature_text
from caas.store.rules import COUNTING_STATES, price_line
from caas.vehicles.models import Vehicle

log = structlog.get_logger(__name__)

REMINDERS_TOPIC: Final = "store.reminders"
CURSOR: Final = "reminders"
# How often the sweep looks for what is due (reminders are a matter of days, not minutes).
REMIND_EVERY: Final = timedelta(hours=1)
# How long before the event each reminder goes.
TRIAL_NOTICE: Final = timedelta(days=3)
RENEWAL_NOTICE: Final = timedelta(days=7)
MAINTENANCE_NOTICE_DAYS: Final = 30
MAINTENANCE_NOTICE_KM: Final = 1_000
# Only yearly plans get a renewal reminder: a monthly one renews too often to announce.
REMINDED_DURATIONS: Final = frozenset({"1Y"})


def tell(
    session: Session,
    customer: Customer,
    *,
    kind: str,
    context: dict[str, Any],
    dedupe_key: str,
    now: datetime,
) -> None:
    """One in-app message and one e-mail to the customer, in their language, at most once per
    `dedupe_key` (`caas.notifications.service.notify_user`)."""
    notify_user(
        session,
        user_id=customer.user_id,
        email=customer.email,
        language=customer.language,
        kind=kind,
        context={"name": customer.first_name, "country": customer.country, **context},
        dedupe_key=dedupe_key,
        now=now,
    )


def feature_name(feature: Feature, customer: Customer) -> str:
    return feature_text(feature, customer.language)[0]


def stamp(moment: datetime) -> str:
    """A moment as it appears in dedupe keys."""
    return moment.strftime("%Y%m%dT%H%M%S")


# --- what is due ---------------------------------------------------------------------------


def remind_trials(session: Session, *, now: datetime) -> int:
    """Trials ending within `TRIAL_NOTICE`: the customer may buy the option; nothing is
    charged. Returns how many reminders were queued (already sent ones are skipped by key)."""
    rows = session.execute(
        select(Entitlement, Feature, Customer, Vehicle.vin)
        .join(Feature, Feature.id == Entitlement.feature_id)
        .join(Customer, Customer.id == Entitlement.customer_id)
        .join(Vehicle, Vehicle.id == Entitlement.vehicle_id)
        .where(
            Entitlement.source == "trial",
            Entitlement.state.in_(COUNTING_STATES),
            Entitlement.valid_until > now,
            Entitlement.valid_until <= now + TRIAL_NOTICE,
        )
    ).all()
    for entitlement, feature, customer, vin in rows:
        assert entitlement.valid_until is not None
        tell(
            session,
            customer,
            kind="trial.ending",
            context={
                "feature": feature_name(feature, customer),
                "vin": vin,
                "ends_at": entitlement.valid_until.isoformat(),
            },
            dedupe_key=f"reminder.trial:{entitlement.id}",
            now=now,
        )
    return len(rows)


def remind_renewals(session: Session, *, now: datetime) -> int:
    """Yearly subscriptions renewing within `RENEWAL_NOTICE` (not those cancelled at the
    period's end): what will be charged (the offer's price with the VAT of the customer's
    country) and when, and how to cancel."""
    rows = session.execute(
        select(Subscription, Offer, Feature, Customer, Vehicle.vin)
        .join(Offer, Offer.id == Subscription.offer_id)
        .join(Feature, Feature.id == Offer.feature_id)
        .join(Customer, Customer.id == Subscription.customer_id)
        .join(Vehicle, Vehicle.id == Subscription.vehicle_id)
        .where(
            Subscription.state == "active",
            Subscription.cancel_at_period_end.is_(False),
            Offer.duration.in_(REMINDED_DURATIONS),
            Subscription.current_period_end > now,
            Subscription.current_period_end <= now + RENEWAL_NOTICE,
        )
    ).all()
    for subscription, offer, feature, customer, vin in rows:
        # The renewal is priced with the VAT in force on its day.
        renewal_vat = vat.rate_at(session, customer.country, subscription.current_period_end)
        tell(
            session,
            customer,
            kind="subscription.renewal_reminder",
            context={
                "feature": feature_name(feature, customer),
                "vin": vin,
                "renews_at": subscription.current_period_end.isoformat(),
                # What the renewal will charge if the price stays as it is today.
                "amount_minor": price_line(offer.net_minor, renewal_vat).gross_minor,
                "currency": offer.currency,
            },
            dedupe_key=f"reminder.renewal:{subscription.id}:{stamp(subscription.current_period_end)}",
            now=now,
        )
    return len(rows)


def maintenance_due_soon(
    due_on: date, due_km: int, *, today: date, odometer_km: int | None
) -> bool:
    """Whether a service due on `due_on` or at `due_km` deserves its reminder today."""
    if today >= due_on - timedelta(days=MAINTENANCE_NOTICE_DAYS):
        return True
    return odometer_km is not None and odometer_km >= due_km - MAINTENANCE_NOTICE_KM


def remind_maintenance(session: Session, *, now: datetime) -> int:
    """Owners whose car's next service is due within `MAINTENANCE_NOTICE_DAYS` or
    `MAINTENANCE_NOTICE_KM`: once per due point (a recorded service makes a new one)."""
    today = now.date()
    sent = 0
    rows = session.execute(
        select(Vehicle, Customer)
        .join(Customer, Customer.id == Vehicle.owner_customer_id)
        .where(Vehicle.delivered_at.is_not(None))
        .order_by(Vehicle.id)
    ).all()
    for vehicle, customer in rows:
        summary = maintenance.maintenance_summary(session, vehicle, today=today)
        due = summary.next_service
        if due is None or not maintenance_due_soon(
            due.due_on, due.due_km, today=today, odometer_km=summary.odometer_km
        ):
            continue
        tell(
            session,
            customer,
            kind="maintenance.due",
            context={
                "vin": vehicle.vin,
                "due_on": due.due_on.isoformat(),
                "due_km": due.due_km,
                "overdue": summary.status == "overdue",
            },
            dedupe_key=f"reminder.maintenance:{vehicle.id}:{due.due_on.isoformat()}:{due.due_km}",
            now=now,
        )
        sent += 1
    return sent


# --- the self-rescheduling sweep -------------------------------------------------------------


def start_reminding(session: Session, *, now: datetime) -> None:
    """Queue the sweep's first run unless the chain has started; cheap, safe to call from
    anywhere at any time (every subscription and trial needs it running: `grant` calls it).
    The first run comes `REMIND_EVERY` later, never on the way of the purchase that started
    the chain; nothing it reminds of is that close."""
    if not chains.started(session, CURSOR):
        chains.queue_run(session, REMINDERS_TOPIC, 0, at=now + REMIND_EVERY, now=now)


def _cursor(session: Session, now: datetime) -> SweepCursor:
    """The cursor row (created the first time), locked until the commit. `swept_until` is
    when the cars' maintenance was last looked at: once a day is enough, from the day after
    the chain starts (the first run, at a car's first grant, stays quick)."""
    return chains.locked_cursor(session, CURSOR, start=now)


def run_reminders(session: Session, *, run: int, now: datetime) -> bool:
    """Run number `run` of the chain: every reminder due, the renewals about to be needed, and
    the next run queued. False when `run` is stale (another message already did it)."""
    from caas.store.subscriptions import plan_due_renewals

    cursor = _cursor(session, now)
    if cursor.runs != run:
        log.info("store.reminders_stale", run=run, current=cursor.runs)
        return False
    trials = remind_trials(session, now=now)
    renewals = remind_renewals(session, now=now)
    planned = plan_due_renewals(session, until=now + REMIND_EVERY, now=now)
    services = 0
    if now.date() > cursor.swept_until.date():
        services = remind_maintenance(session, now=now)
        cursor.swept_until = now
    cursor.runs = run + 1
    chains.queue_run(session, REMINDERS_TOPIC, cursor.runs, at=now + REMIND_EVERY, now=now)
    log.info(
        "store.reminded",
        trials=trials,
        renewals=renewals,
        services=services,
        renewals_planned=planned,
    )
    return True


def handlers(clock: Clock) -> dict[str, Handler]:
    def remind(session: Session, payload: dict[str, Any]) -> None:
        try:
            run_reminders(session, run=int(payload["run"]), now=clock.now())
        except Exception as error:
            # The chain must never stop: retried with backoff, never parked.
            raise RetryLater(f"{type(error).__name__}: {error}") from error

    return {REMINDERS_TOPIC: remind}
