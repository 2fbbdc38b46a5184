"""What a customer's cars will be charged in the coming days, and when.

Three sources, each priced as the job that will charge it prices it:

- **renewals** of subscriptions that renew (active or past due, not cancelled at the period's
  end), every one that falls within the horizon, at the offer's current price with the VAT in
  force on the renewal's day (`caas.store.subscriptions`);
- **occurrences** of planned and recurring schedules charged one by one (`each`; an `upfront`
  schedule was paid at checkout), at the offer's price per started day of the window with the
  VAT of the day it starts (`caas.store.schedules`);
- **the metered month**: the cars' pay-per-use so far this month (`caas.store.metering`),
  charged by the monthly run after the month ends, with an estimate for the whole month at the
  pace so far (never above the owner's cap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.billing import rules as billing_rules
from caas.billing import vat
from caas.catalog.models import Feature
from caas.sales import service as sales
from caas.sales.models import Customer
from caas.store import entitlements, metering, schedules
from caas.store.models import Offer, Schedule, Subscription
from caas.store.reminders import feature_name
from caas.store.rules import add_duration
from caas.vehicles.models import Vehicle

DEFAULT_DAYS: Final = 60
MAX_DAYS: Final = 366
RENEWING_STATES: Final = ("active", "past_due")


@dataclass(frozen=True)
class UpcomingCharge:
    """One charge to come: what, for which car, when, and how much (VAT included).

    For the metered month, `gross_minor` is the estimate for the whole month and
    `so_far_gross_minor` what has been used until now; the others are exact at today's prices.
    """

    kind: str  # renewal | occurrence | metered
    vin: str
    code: str
    feature: str
    due_at: datetime
    net_minor: int
    vat_minor: int
    gross_minor: int
    currency: str
    period_start: datetime | None = None
    period_end: datetime | None = None
    so_far_gross_minor: int | None = None


class _Rates:
    """The VAT rate of the customer's country per day, read once per day asked."""

    def __init__(self, session: Session, country: str) -> None:
        self._session = session
        self._country = country
        self._by_day: dict[date, int] = {}

    def at(self, moment: datetime) -> int:
        day = billing_rules.issue_date(moment, self._country)
        if day not in self._by_day:
            self._by_day[day] = vat.rate_at(self._session, self._country, moment)
        return self._by_day[day]


def upcoming_charges(
    session: Session,
    *,
    user: User,
    now: datetime,
    days: int = DEFAULT_DAYS,
    vin: str | None = None,
) -> list[UpcomingCharge]:
    """The customer's charges due in the next `days` days, soonest first: for one car (`vin`,
    404 unless it is theirs) or all the cars they own."""
    customer = sales.customer_of_user(session, user)
    if vin is not None:
        cars = [entitlements.owned_vehicle(session, user, vin)]
    else:
        cars = list(
            session.scalars(
                select(Vehicle).where(Vehicle.owner_customer_id == customer.id).order_by(Vehicle.id)
            )
        )
    if not cars:
        return []
    until = now + timedelta(days=days)
    rates = _Rates(session, customer.country)
    found = [
        *_renewals(session, customer, cars, rates, now=now, until=until),
        *_occurrences(session, customer, cars, rates, now=now, until=until),
        *_metered(session, customer, cars, now=now, until=until),
    ]
    return sorted(found, key=lambda charge: (charge.due_at, charge.vin, charge.code))


def _priced(net_minor: int, vat_rate_bp: int) -> tuple[int, int, int]:
    line = billing_rules.priced_line("", net_minor, vat_rate_bp)
    return line.net_minor, line.vat_minor, line.gross_minor


def _renewals(
    session: Session,
    customer: Customer,
    cars: Sequence[Vehicle],
    rates: _Rates,
    *,
    now: datetime,
    until: datetime,
) -> list[UpcomingCharge]:
    vins = {car.id: car.vin for car in cars}
    rows = session.execute(
        select(Subscription, Offer, Feature)
        .join(Offer, Offer.id == Subscription.offer_id)
        .join(Feature, Feature.id == Offer.feature_id)
        .where(
            Subscription.customer_id == customer.id,
            Subscription.vehicle_id.in_(vins),
            Subscription.state.in_(RENEWING_STATES),
            Subscription.cancel_at_period_end.is_(False),
        )
        .order_by(Subscription.id)
    ).all()
    found = []
    for subscription, offer, feature in rows:
        # A renewal retried after a failure is due at the retry; the ones after it follow
        # the period it pays for.
        due = subscription.next_attempt_at or subscription.current_period_end
        start = subscription.current_period_end
        while due <= until:
            end = add_duration(max(start, due), offer.duration)
            if due >= now:
                net, vat_minor, gross = _priced(offer.net_minor, rates.at(due))
                found.append(
                    UpcomingCharge(
                        kind="renewal",
                        vin=vins[subscription.vehicle_id],
                        code=feature.code,
                        feature=feature_name(feature, customer),
                        due_at=due,
                        net_minor=net,
                        vat_minor=vat_minor,
                        gross_minor=gross,
                        currency=offer.currency,
                        period_start=max(start, due),
                        period_end=end,
                    )
                )
            start = due = end
    return found


def _occurrences(
    session: Session,
    customer: Customer,
    cars: Sequence[Vehicle],
    rates: _Rates,
    *,
    now: datetime,
    until: datetime,
) -> list[UpcomingCharge]:
    vins = {car.id: car.vin for car in cars}
    rows = session.execute(
        select(Schedule, Offer, Feature)
        .join(Offer, Offer.id == Schedule.offer_id)
        .join(Feature, Feature.id == Offer.feature_id)
        .where(
            Schedule.customer_id == customer.id,
            Schedule.vehicle_id.in_(vins),
            Schedule.state == "active",
            Schedule.charge == "each",
        )
        .order_by(Schedule.id)
    ).all()
    # Enough occurrences of a weekly schedule to cover the horizon.
    count = (until - now).days // 7 + 2
    found = []
    for schedule, offer, feature in rows:
        for coming in schedules.upcoming(session, schedule, now=now, count=count):
            if coming.state != "planned" or not now <= coming.starts_at <= until:
                continue  # a started one was charged at its start
            started = schedules.started_days(coming.starts_at, coming.ends_at)
            net, vat_minor, gross = _priced(offer.net_minor * started, rates.at(coming.starts_at))
            found.append(
                UpcomingCharge(
                    kind="occurrence",
                    vin=vins[schedule.vehicle_id],
                    code=feature.code,
                    feature=feature_name(feature, customer),
                    due_at=coming.starts_at,
                    net_minor=net,
                    vat_minor=vat_minor,
                    gross_minor=gross,
                    currency=offer.currency,
                    period_start=coming.starts_at,
                    period_end=coming.ends_at,
                )
            )
    return found


def _metered(
    session: Session,
    customer: Customer,
    cars: Sequence[Vehicle],
    *,
    now: datetime,
    until: datetime,
) -> list[UpcomingCharge]:
    due = metering.next_month_run(now)
    if due > until:
        return []
    # The month that run charges, as the run names it (in the grace hours after a month ends,
    # the one just ended), in the customer's zone.
    charged = due - metering.MONTH_GRACE - timedelta(days=1)
    local_start = datetime(
        charged.year, charged.month, 1, tzinfo=metering.zone_of(customer.country)
    )
    start, end = metering.month_of(local_start, customer.country)
    lines = [
        line
        for line in metering.rated_usage(session, [car.id for car in cars], start=start, end=end)
        if line.customer_id == customer.id
    ]
    features = {
        feature.id: feature
        for feature in session.scalars(
            select(Feature).where(Feature.id.in_({line.feature_id for line in lines}))
        )
    }
    vins = {car.id: car.vin for car in cars}
    found = []
    for line in lines:
        estimate = estimate_month(
            line.priced.net_minor,
            elapsed=min(now, end) - start,
            month=end - start,
            cap_gross_minor=line.spending_cap_minor,
            vat_rate_bp=line.priced.vat_rate_bp,
        )
        net, vat_minor, gross = _priced(estimate, line.priced.vat_rate_bp)
        found.append(
            UpcomingCharge(
                kind="metered",
                vin=vins[line.vehicle_id],
                code=line.code,
                feature=feature_name(features[line.feature_id], customer),
                due_at=due,
                net_minor=net,
                vat_minor=vat_minor,
                gross_minor=gross,
                currency=line.currency,
                period_start=start,
                period_end=end,
                so_far_gross_minor=line.priced.gross_minor,
            )
        )
    return found


def estimate_month(
    net_so_far: int,
    *,
    elapsed: timedelta,
    month: timedelta,
    cap_gross_minor: int | None,
    vat_rate_bp: int,
) -> int:
    """The month's net at the pace so far (half up), never less than what is used already and
    never above the net of the owner's gross cap (the option stops at the cap)."""
    if elapsed <= timedelta(0):
        return net_so_far
    seconds, total = int(elapsed.total_seconds()), int(month.total_seconds())
    projected = max(net_so_far, (net_so_far * total * 2 + seconds) // (seconds * 2))
    if cap_gross_minor is None:
        return projected
    cap_net, _ = billing_rules.split_gross(cap_gross_minor, vat_rate_bp)
    return max(net_so_far, min(projected, cap_net))
