"""Pay per use: the cars' usage of metered options rated, capped and invoiced monthly.

Usage events (`caas.vehicles.models.FeatureUsage`, stored once per VIN and sequence by the
ingest) are rated by the unit price of the offer of the car's metered entitlement whose window
covers the moment of use, summed per car, feature and month (the month of the customer's zone)
and priced with the VAT of the customer's country, half up per line (`rules.price_line`).

Two outbox chains, built like the reminders (`caas.store.reminders`):

- `store.metering.caps` runs every few minutes over the cars whose usage arrived since the last
  run (a `SweepCursor` keeps the position), so the car's ingest stays two statements. A car whose
  month reaches its spending cap has its metered entitlement ended now and a new one granted
  from the first of next month (the window sweep re-signs the car then), one new configuration,
  and the customer told once per month.
- `store.metering.month` runs on the first of each month and streams the customers' cars with
  usage in the month before, in chunks, one job per chunk (`store.metering.charges`) that
  starts each car's payment with a few set-based reads for the whole chunk; each payment is
  then settled by a job of its own (`store.metering.settle`: authorised, captured, invoiced).
  A payment's key is derived from customer, car and month, so a second run (or a restarted
  worker) charges nothing twice; the card is the one kept on the purchase of the metered
  option.

A declined month goes through dunning (`store.metering.retry`): tried again `RETRY_AFTER_DAYS`
after the first failure, each time with a payment of its own (the customer's newest card, see
`_card`) and the customer told; after the last try the car's metered options are paused (a new
configuration without them) and the month is tried `PAUSED_TRIES` more times, every
`PAUSED_RETRY_EVERY`; a try that pays switches them back on. A month still unpaid after the
last of those is written off as uncollectible, as card platforms end their dunning (a bounded
number of tries, then the invoice marked uncollectible): nothing more is tried, its options
stay off, the customer and every operator are told and the payment's history says so, for the
maker's staff to collect it by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import structlog
from babel.numbers import format_currency, format_decimal
from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from caas.accounts.models import Role, User
from caas.billing import methods, vat
from caas.billing import rules as billing_rules
from caas.billing import service as billing
from caas.billing.models import Payment
from caas.billing.provider import PaymentProvider, SharedProvider
from caas.catalog.models import Country, Feature
from caas.core.clock import Clock
from caas.core.history import Actor, record
from caas.core.outbox import NOTIFY_CHANNEL, Handler, OutboxMessage, RetryLater, enqueue
from caas.core.settings import Settings
from caas.notifications.service import notify_user
from caas.ota.service import lock_vehicle, request_configuration
from caas.sales.models import Customer
from caas.store import chains, entitlements
from caas.store.models import Entitlement, Offer, Purchase
from caas.store.offers import feature_text
from caas.store.reminders import tell
from caas.store.rules import PricedLine, price_line
from caas.vehicles.models import FeatureUsage, Vehicle

log = structlog.get_logger(__name__)

ACTOR: Final = Actor.system("metering")
CAPS_TOPIC: Final = "store.metering.caps"
MONTH_TOPIC: Final = "store.metering.month"
CHARGE_TOPIC: Final = "store.metering.charge"
CHARGES_TOPIC: Final = "store.metering.charges"
SETTLE_TOPIC: Final = "store.metering.settle"
RETRY_TOPIC: Final = "store.metering.retry"
# A declined month is tried again this many days after its first failure; after the last
# failed try the car's metered options are paused until the month is paid.
RETRY_AFTER_DAYS: Final = (1, 3, 7)
# While paused, the unpaid month is tried again this often (a new card may pay it), this many
# times; then it is uncollectible: four weeks after its first failure, about when the next
# month is charged, so a customer never owes two months to the machine.
PAUSED_RETRY_EVERY: Final = timedelta(days=7)
PAUSED_TRIES: Final = 3
# The number of the month's last try (0 is its first charge).
LAST_TRY: Final = len(RETRY_AFTER_DAYS) + PAUSED_TRIES
CAPS_CURSOR: Final = "metering_caps"
# How often usage is checked against the caps: a few minutes over the cap at most.
CHECK_EVERY: Final = timedelta(minutes=5)
# The monthly run waits this long after midnight UTC of the 1st (every customer's zone is at or
# east of UTC, so their month has ended) for the usage of cars that were offline.
MONTH_GRACE: Final = timedelta(hours=6)
# Cars the monthly run reads at once and charges in one job (`CHARGES_TOPIC`): a chunk's reads
# are a few statements, whatever its size.
CHARGE_CHUNK: Final = 200
# States of a metered entitlement whose window is charged for (a revoked one never reached
# the car).
RATED_STATES: Final = ("delivering", "active", "ended")
UNIT_WORDS: Final = {
    "en": {"hour": "hours", "km": "km", "activation": "activations"},
    "es": {"hour": "horas", "km": "km", "activation": "activaciones"},
    "fr": {"hour": "heures", "km": "km", "activation": "activations"},
    "de": {"hour": "Stunden", "km": "km", "activation": "Aktivierungen"},
    "it": {"hour": "ore", "km": "km", "activation": "attivazioni"},
    "pt": {"hour": "horas", "km": "km", "activation": "ativações"},
}


@dataclass(frozen=True)
class MeteredLine:
    """One car's use of one metered feature in one month, rated and priced."""

    vehicle_id: int
    customer_id: int
    feature_id: int
    code: str
    unit: str
    quantity: Decimal
    unit_price_minor: int
    currency: str
    priced: PricedLine
    spending_cap_minor: int | None


def zone_of(country: str) -> ZoneInfo:
    return ZoneInfo(billing_rules.COUNTRY_ZONES.get(country, "UTC"))


def month_of(moment: datetime, country: str) -> tuple[datetime, datetime]:
    """The customer's calendar month holding `moment`, as [start, end) in UTC."""
    local = moment.astimezone(zone_of(country))
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start.astimezone(UTC), following.astimezone(UTC)


def month_label(start: datetime, country: str) -> str:
    return start.astimezone(zone_of(country)).strftime("%Y-%m")


def rate(quantity: Decimal, unit_price_minor: int) -> int:
    """Net of a quantity at a unit price, half up to the minor unit."""
    return int((quantity * unit_price_minor).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def rated_usage(
    session: Session, vehicle_ids: Sequence[int], *, start: datetime, end: datetime
) -> list[MeteredLine]:
    """The cars' metered use in [start, end), one line per car, feature and unit price: each
    event rated by the offer of the metered entitlement covering its moment (an event no
    metered window covers is not charged). One statement whatever the number of cars."""
    covered = and_(
        Entitlement.code == FeatureUsage.feature,
        Entitlement.source == "metered",
        Entitlement.state.in_(RATED_STATES),
        Entitlement.valid_from <= FeatureUsage.at,
        or_(Entitlement.valid_until.is_(None), FeatureUsage.at < Entitlement.valid_until),
    )
    rows = session.execute(
        select(
            Vehicle.id,
            Entitlement.customer_id,
            Entitlement.feature_id,
            Entitlement.code,
            Offer.unit,
            Offer.net_minor,
            Offer.currency,
            Customer.country,
            func.max(Entitlement.spending_cap_minor),
            func.sum(FeatureUsage.quantity),
        )
        .join(FeatureUsage, FeatureUsage.vin == Vehicle.vin)
        .join(Entitlement, and_(Entitlement.vehicle_id == Vehicle.id, covered))
        .join(Offer, and_(Offer.id == Entitlement.offer_id, Offer.unit == FeatureUsage.unit))
        .join(Customer, Customer.id == Entitlement.customer_id)
        .where(Vehicle.id.in_(vehicle_ids), FeatureUsage.at >= start, FeatureUsage.at < end)
        .group_by(
            Vehicle.id,
            Entitlement.customer_id,
            Entitlement.feature_id,
            Entitlement.code,
            Offer.unit,
            Offer.net_minor,
            Offer.currency,
            Customer.country,
        )
        .order_by(Vehicle.id, Entitlement.code, Offer.net_minor)
    ).all()
    # A month's use is charged at its end: the VAT in force on the month's last day.
    last_moment = end - timedelta(microseconds=1)
    rates = {
        country: vat.rate_at(session, country, last_moment)
        for country in {row.country for row in rows}
    }
    lines = []
    for (
        vehicle_id,
        customer_id,
        feature_id,
        code,
        unit,
        price,
        currency,
        country,
        cap,
        total,
    ) in rows:
        # The car counts in floats; its sum is read at the precision it was sent with.
        quantity = Decimal(repr(total)).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
        lines.append(
            MeteredLine(
                vehicle_id=vehicle_id,
                customer_id=customer_id or 0,  # joined to a customer: never None
                feature_id=feature_id,
                code=code,
                unit=str(unit),
                quantity=quantity.normalize(),
                unit_price_minor=price,
                currency=currency,
                priced=price_line(rate(quantity, price), rates[country]),
                spending_cap_minor=cap,
            )
        )
    return lines


def this_month(
    session: Session, vehicle: Vehicle, customer: Customer, *, now: datetime
) -> list[MeteredLine]:
    """The running amount of the car's metered options this month (the customer's month)."""
    start, end = month_of(now, customer.country)
    return rated_usage(session, [vehicle.id], start=start, end=end)


def spent_by_feature(lines: Iterable[MeteredLine]) -> dict[str, int]:
    """Gross amount per feature code (a month may hold two prices of one feature)."""
    spent: dict[str, int] = {}
    for line in lines:
        spent[line.code] = spent.get(line.code, 0) + line.priced.gross_minor
    return spent


# --- the spending cap ------------------------------------------------------------------------


def enforce_caps(session: Session, vehicle_ids: Sequence[int], *, now: datetime) -> int:
    """Switch off, until the first of next month, every metered option of these cars whose
    month has reached its cap; returns how many were switched off."""
    switched = 0
    for vehicle_id in sorted(vehicle_ids):  # several cars: by id, as the sweep and re-sign do
        capped_rights = select(Entitlement).where(
            Entitlement.vehicle_id == vehicle_id,
            Entitlement.source == "metered",
            Entitlement.state == "active",
            Entitlement.spending_cap_minor.is_not(None),
            Entitlement.valid_from <= now,
            or_(Entitlement.valid_until.is_(None), Entitlement.valid_until > now),
        )
        if session.scalar(capped_rights.with_only_columns(Entitlement.id).limit(1)) is None:
            continue
        # The car's row before what it runs (`lock_vehicle`), then its rights read under it.
        lock_vehicle(session, vehicle_id)
        capped = list(session.scalars(capped_rights.execution_options(populate_existing=True)))
        vehicle = session.get_one(Vehicle, vehicle_id)
        reached = []
        for entitlement in capped:
            customer = session.get_one(Customer, entitlement.customer_id)
            spent = spent_by_feature(this_month(session, vehicle, customer, now=now))
            if spent.get(entitlement.code, 0) >= (entitlement.spending_cap_minor or 0):
                reached.append((entitlement, customer, spent[entitlement.code]))
        for entitlement, customer, amount in reached:
            _pause_until_next_month(session, vehicle, entitlement, customer, amount, now=now)
        if reached:
            request_configuration(
                session, vehicle, reason="metered.cap_reached", actor=ACTOR, now=now
            )
            switched += len(reached)
    return switched


def _pause_until_next_month(
    session: Session,
    vehicle: Vehicle,
    entitlement: Entitlement,
    customer: Customer,
    amount_minor: int,
    *,
    now: datetime,
) -> None:
    start, next_month = month_of(now, customer.country)
    entitlements.end(session, entitlement, at=now, actor=ACTOR, now=now)
    feature = session.get_one(Feature, entitlement.feature_id)
    entitlements.grant(
        session,
        vehicle=vehicle,
        feature=feature,
        source="metered",
        valid_from=next_month,
        valid_until=None,
        customer_id=entitlement.customer_id,
        offer_id=entitlement.offer_id,
        purchase_id=entitlement.purchase_id,
        spending_cap_minor=entitlement.spending_cap_minor,
        actor=ACTOR,
        now=now,
    )
    offer = session.get_one(Offer, entitlement.offer_id)
    tell(
        session,
        customer,
        kind="metered.cap_reached",
        context={
            "vin": vehicle.vin,
            "feature": feature_text(feature, customer.language)[0],
            "amount_minor": amount_minor,
            "cap_minor": entitlement.spending_cap_minor,
            "currency": offer.currency,
            "back_on": next_month.isoformat(),
        },
        dedupe_key=f"metered.cap:{entitlement.id}:{month_label(start, customer.country)}",
        now=now,
    )


def check_caps(session: Session, *, run: int, now: datetime) -> bool:
    """Run `run` of the cap chain: the cars whose usage arrived since the last run checked, the
    next run queued. False when the run is stale."""
    cursor = chains.locked_cursor(session, CAPS_CURSOR, start=now)
    if cursor.runs != run:
        return False
    vehicle_ids = list(
        session.scalars(
            select(Vehicle.id)
            .distinct()
            .join(FeatureUsage, FeatureUsage.vin == Vehicle.vin)
            .where(
                FeatureUsage.received_at >= cursor.swept_until,
                FeatureUsage.received_at < now,
            )
        )
    )
    switched = enforce_caps(session, vehicle_ids, now=now)
    cursor.swept_until = now
    cursor.runs = run + 1
    chains.queue_run(session, CAPS_TOPIC, cursor.runs, at=now + CHECK_EVERY, now=now)
    log.info("store.metering_caps", cars=len(vehicle_ids), switched_off=switched)
    return True


# --- the monthly invoice ---------------------------------------------------------------------


def next_month_run(now: datetime) -> datetime:
    """When the monthly run after `now` is due: the next first of a month (UTC) plus grace."""
    first = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    due = first + MONTH_GRACE
    return due if due > now else (first + timedelta(days=32)).replace(day=1) + MONTH_GRACE


def start_metering(session: Session, *, now: datetime) -> None:
    """Queue both chains unless they run already; idempotent (dedupe keys)."""
    if not chains.started(session, CAPS_CURSOR):
        # The position starts now, so the first run sees the usage that arrives before it.
        chains.locked_cursor(session, CAPS_CURSOR, start=now)
        chains.queue_run(session, CAPS_TOPIC, 0, at=now + CHECK_EVERY, now=now)
    due = next_month_run(now)
    _queue(session, MONTH_TOPIC, {"due": due.isoformat()}, f"{MONTH_TOPIC}:{due:%Y-%m}", due, now)


def invoice_month(session: Session, *, due: datetime, now: datetime) -> int:
    """The monthly run due at `due`: one charge queued per customer and car with metered use
    in the month before (its dedupe key makes a second run queue nothing), and the next run
    queued. Returns how many charges it queued.

    The cars are streamed in chunks of `CHARGE_CHUNK` and each chunk's charges queued in one
    statement, so a fleet of any size takes bounded memory and a few statements per chunk."""
    month_end = due - MONTH_GRACE
    month_start = (month_end - timedelta(days=1)).replace(day=1)
    # The widest window any customer's zone can have (their months end at or before UTC's).
    charged = (
        select(Entitlement.vehicle_id, Entitlement.customer_id)
        .distinct()
        .join(Vehicle, Vehicle.id == Entitlement.vehicle_id)
        .join(FeatureUsage, FeatureUsage.vin == Vehicle.vin)
        .where(
            Entitlement.source == "metered",
            Entitlement.customer_id.is_not(None),
            Entitlement.code == FeatureUsage.feature,
            FeatureUsage.at >= month_start - timedelta(hours=14),
            FeatureUsage.at < month_end,
        )
        .order_by(Entitlement.vehicle_id, Entitlement.customer_id)
    )
    label = f"{month_start:%Y-%m}"
    queued = 0
    chunks = []
    for chunk in session.execute(charged.execution_options(yield_per=CHARGE_CHUNK)).partitions():
        cars = [[row[0], row[1]] for row in chunk]
        key = f"{CHARGES_TOPIC}:{label}:{cars[0][0]}:{cars[0][1]}"
        chunks.append((key, {"month": label, "cars": cars}))
        queued += len(cars)
    _queue_many(session, CHARGES_TOPIC, chunks, now)
    following = next_month_run(due)
    _queue(
        session,
        MONTH_TOPIC,
        {"due": following.isoformat()},
        f"{MONTH_TOPIC}:{following:%Y-%m}",
        following,
        now,
    )
    log.info("store.metering_month", month=label, charges=queued)
    return queued


def _queue_many(
    session: Session, topic: str, messages: Sequence[tuple[str, dict[str, Any]]], now: datetime
) -> None:
    """`enqueue` for many messages due now (dedupe key, payload) at once: one INSERT (a key
    already queued is skipped, as `enqueue` does) and one wake-up of the relays."""
    if not messages:
        return
    rows = [
        {
            "topic": topic,
            "dedupe_key": key,
            "payload": payload,
            "created_at": now,
            "run_after": now,
            "attempts": 0,
        }
        for key, payload in messages
    ]
    session.execute(
        insert(OutboxMessage).values(rows).on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    session.execute(
        text("SELECT pg_notify(:channel, :topic)"), {"channel": NOTIFY_CHANNEL, "topic": topic}
    )


def invoice_lines(
    lines: Sequence[MeteredLine], customer: Customer, session: Session
) -> list[billing_rules.LineDraft]:
    """One invoice line per feature and price: "Power boost, 37 hours × 1,50 €"."""
    language = customer.language
    locale = language if language in UNIT_WORDS else "en"
    drafts = []
    for line in lines:
        feature = session.get_one(Feature, line.feature_id)
        name = feature_text(feature, language)[0]
        quantity = format_decimal(line.quantity, locale=locale)
        unit = UNIT_WORDS[locale].get(line.unit, line.unit)
        price = format_currency(Decimal(line.unit_price_minor) / 100, line.currency, locale=locale)
        description = f"{name}, {quantity} {unit} × {price}"
        drafts.append(
            billing_rules.priced_line(description, line.priced.net_minor, line.priced.vat_rate_bp)
        )
    return drafts


def _card(session: Session, vehicle_id: int, customer_id: int) -> str | None:
    """The customer's default card when they keep one; else the card kept on the newest
    purchase of a metered option of the car, unless the customer removed it."""
    return _cards(session, [(vehicle_id, customer_id)])[vehicle_id, customer_id]


def _cards(session: Session, cars: Sequence[tuple[int, int]]) -> dict[tuple[int, int], str | None]:
    """`_card` for many (car, customer) at once: three statements whatever their number."""
    if not cars:
        return {}
    kept: dict[tuple[int, int], str] = {}
    for vehicle_id, customer_id, token in session.execute(
        select(Entitlement.vehicle_id, Entitlement.customer_id, Purchase.payment_method)
        .join(Purchase, Entitlement.purchase_id == Purchase.id)
        .where(
            Entitlement.vehicle_id.in_({vehicle_id for vehicle_id, _ in cars}),
            Entitlement.customer_id.in_({customer_id for _, customer_id in cars}),
            Entitlement.source == "metered",
            Purchase.payment_method.is_not(None),
        )
        # The newest purchase's card per car and customer.
        .distinct(Entitlement.vehicle_id, Entitlement.customer_id)
        .order_by(Entitlement.vehicle_id, Entitlement.customer_id, Purchase.id.desc())
    ):
        if customer_id is not None and token is not None:
            kept[vehicle_id, customer_id] = token
    tokens = methods.charge_tokens(session, {(car[1], kept.get(car)) for car in cars})
    return {car: tokens[car[1], kept.get(car)] for car in cars}


def begin_month_charge(
    session: Session, *, vehicle_id: int, customer_id: int, month: str, now: datetime
) -> Payment | None:
    """The payment of one car's metered use in `month` (YYYY-MM of the customer's zone),
    started once whatever the number of calls (its key is the customer, car and month)."""
    key = f"metered:{customer_id}:{vehicle_id}:{month}"
    started = session.scalars(
        select(Payment).where(Payment.customer_id == customer_id, Payment.idempotency_key == key)
    ).first()
    if started is not None:
        return started  # usage that arrived after the month was invoiced is not charged twice
    customer = session.get_one(Customer, customer_id)
    year, number = (int(part) for part in month.split("-"))
    local_start = datetime(year, number, 1, tzinfo=zone_of(customer.country))
    start, end = month_of(local_start, customer.country)
    lines = [
        line
        for line in rated_usage(session, [vehicle_id], start=start, end=end)
        if line.customer_id == customer_id and line.priced.net_minor > 0
    ]
    card = _card(session, vehicle_id, customer_id)
    if not lines or card is None:
        return None
    return billing.begin_store_payment(
        session,
        customer_id=customer_id,
        kind="metered",
        lines=invoice_lines(lines, customer, session),
        currency=lines[0].currency,
        country=customer.country,
        payment_method=card,
        idempotency_key=key,
        actor=ACTOR,
        now=now,
        details={"vehicle_id": vehicle_id, "month": month},
    )


def begin_month_charges(
    session: Session, cars: Sequence[tuple[int, int]], *, month: str, now: datetime
) -> list[tuple[int, Payment, str | None]]:
    """`begin_month_charge` for a chunk of (car, customer): the payments started already, the
    customers, the usage (one statement per country's month) and the features read at once;
    then each new payment written as `begin_month_charge` writes it. Returns (car, payment,
    card: None for a payment started before) for every car with a payment."""
    keys = {car: f"metered:{car[1]}:{car[0]}:{month}" for car in cars}
    started = {
        (payment.customer_id, payment.idempotency_key): payment
        for payment in session.scalars(
            select(Payment).where(Payment.idempotency_key.in_(keys.values()))
        )
    }
    customers = {
        customer.id: customer
        for customer in session.scalars(
            select(Customer).where(Customer.id.in_({customer_id for _, customer_id in cars}))
        )
    }
    by_country: dict[str, list[int]] = {}
    for vehicle_id, customer_id in cars:
        by_country.setdefault(customers[customer_id].country, []).append(vehicle_id)
    year, number = (int(part) for part in month.split("-"))
    usage: dict[tuple[int, int], list[MeteredLine]] = {}
    for country, vehicle_ids in by_country.items():
        start, end = month_of(datetime(year, number, 1, tzinfo=zone_of(country)), country)
        for line in rated_usage(session, vehicle_ids, start=start, end=end):
            if line.priced.net_minor > 0:
                usage.setdefault((line.vehicle_id, line.customer_id), []).append(line)
    # Into the session's identity map, where `invoice_lines` finds them without a query (kept
    # referenced: the session holds its objects weakly).
    feature_ids = {line.feature_id for lines in usage.values() for line in lines}
    features = session.scalars(select(Feature).where(Feature.id.in_(feature_ids))).all()
    cards = _cards(session, [car for car in cars if car in usage])
    answers: list[tuple[int, Payment | None, str | None]] = []
    asked: list[billing.StorePayment] = []
    for car in cars:
        vehicle_id, customer_id = car
        payment = started.get((customer_id, keys[car]))
        if payment is not None:
            answers.append((vehicle_id, payment, None))
            continue
        lines = usage.get(car)
        card = cards.get(car)
        if not lines or card is None:
            continue
        customer = customers[customer_id]
        asked.append(
            billing.StorePayment(
                customer_id=customer_id,
                kind="metered",
                lines=invoice_lines(lines, customer, session),
                currency=lines[0].currency,
                country=customer.country,
                payment_method=card,
                idempotency_key=keys[car],
                details={"vehicle_id": vehicle_id, "month": month},
            )
        )
        answers.append((vehicle_id, None, card))
    del features
    new = iter(billing.begin_store_payments(session, asked, actor=ACTOR, now=now))
    return [
        (vehicle_id, payment if payment is not None else next(new), card)
        for vehicle_id, payment, card in answers
    ]


@dataclass(frozen=True)
class Dunning:
    """Where an unpaid month stands: which try this is (0: the first charge), since when it
    fails, and the metered entitlements paused for it (to switch back on once paid)."""

    vehicle_id: int
    attempt: int = 0
    first_failed_at: datetime | None = None
    paused: tuple[int, ...] = ()

    def payload(self) -> dict[str, Any]:
        return {
            "vehicle_id": self.vehicle_id,
            "attempt": self.attempt,
            "first_failed_at": self.first_failed_at.isoformat() if self.first_failed_at else None,
            "paused": list(self.paused),
        }

    @classmethod
    def of(cls, payload: dict[str, Any]) -> Dunning:
        failed = payload.get("first_failed_at")
        return cls(
            vehicle_id=int(payload["vehicle_id"]),
            attempt=int(payload.get("attempt", 0)),
            first_failed_at=datetime.fromisoformat(failed) if failed else None,
            paused=tuple(int(i) for i in payload.get("paused", ())),
        )


def settle_month_charge(
    session: Session,
    payment: Payment,
    *,
    card: str,
    month: str,
    provider: PaymentProvider,
    now: datetime,
    dunning: Dunning | None = None,
) -> Payment:
    """Authorise and capture (billing issues the invoice); a failure is told to the customer
    once. Raises `RetryLater` while the provider has not answered. With `dunning`, a failure
    schedules the next try (or pauses the car's metered options, or after the last try writes
    the month off) and a success switches paused ones back on."""
    payment = billing.charge_store_payment(
        session, payment, payment_method=card, provider=provider, actor=ACTOR, now=now
    )
    # The last try's failure is told once, by the month's write-off.
    if payment.state == "failed" and (dunning is None or dunning.attempt < LAST_TRY):
        customer = session.get_one(Customer, payment.customer_id)
        tell(
            session,
            customer,
            kind="metered.charge_failed",
            context={
                "amount_minor": payment.amount_minor,
                "currency": payment.currency,
                "month": month,
            },
            dedupe_key=f"metered.charge_failed:{payment.id}",
            now=now,
        )
    if payment.state == "failed":
        if dunning is not None:
            _month_declined(session, payment, month=month, dunning=dunning, now=now)
    elif payment.state not in ("captured",):
        raise RetryLater(f"metered payment {payment.id} is {payment.state} at the provider")
    elif dunning is not None and dunning.paused:
        _resume(session, payment, dunning=dunning, now=now)
    return payment


# --- dunning -----------------------------------------------------------------------------------


def _month_key(customer_id: int, vehicle_id: int, month: str) -> str:
    return f"metered:{customer_id}:{vehicle_id}:{month}"


def _month_declined(
    session: Session, payment: Payment, *, month: str, dunning: Dunning, now: datetime
) -> None:
    """The try `dunning.attempt` of the month failed: the next one scheduled, after the last
    scheduled one the car's metered options paused, and after the last try of all the month
    written off."""
    if dunning.attempt >= LAST_TRY:
        _write_off(session, payment, month=month, dunning=dunning, now=now)
        return
    first_failed_at = dunning.first_failed_at or now
    paused = dunning.paused
    if dunning.attempt < len(RETRY_AFTER_DAYS):
        at = first_failed_at + timedelta(days=RETRY_AFTER_DAYS[dunning.attempt])
    else:
        if not paused:
            paused = _pause_for_dunning(session, payment, dunning.vehicle_id, month, now=now)
        at = now + PAUSED_RETRY_EVERY
    following = Dunning(dunning.vehicle_id, dunning.attempt + 1, first_failed_at, paused)
    record(
        session,
        at=now,
        actor=ACTOR,
        subject_type="payment",
        subject_id=payment.id,
        customer_id=payment.customer_id,
        event="metered.retry_scheduled",
        details={"month": month, "attempt": following.attempt, "at": at.isoformat()},
    )
    key = _month_key(payment.customer_id, dunning.vehicle_id, month)
    _queue(
        session,
        RETRY_TOPIC,
        {"customer_id": payment.customer_id, "month": month, **following.payload()},
        f"{RETRY_TOPIC}:{key}:{following.attempt}",
        at,
        now,
    )


def _write_off(
    session: Session, payment: Payment, *, month: str, dunning: Dunning, now: datetime
) -> None:
    """The month is uncollectible: no try is queued any more, its options stay paused, and the
    payment's history (in the customer's file), the customer and every operator say so: the
    operators collect it by other means."""
    vehicle = session.get_one(Vehicle, dunning.vehicle_id)
    customer = session.get_one(Customer, payment.customer_id)
    told = {
        "vin": vehicle.vin,
        "month": month,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "tries": dunning.attempt + 1,
    }
    record(
        session,
        at=now,
        actor=ACTOR,
        subject_type="payment",
        subject_id=payment.id,
        customer_id=customer.id,
        event="metered.uncollectible",
        details={
            **told,
            "vehicle_id": vehicle.id,
            "first_failed_at": (dunning.first_failed_at or now).isoformat(),
        },
    )
    key = _month_key(customer.id, vehicle.id, month)
    tell(
        session,
        customer,
        kind="metered.uncollectible",
        context=told,
        dedupe_key=f"metered.uncollectible:{key}",
        now=now,
    )
    about = {**told, "customer": customer.full_name, "link": f"/operator/customers/{customer.id}"}
    _tell_operators(session, about, dedupe_key=f"metered.uncollectible:{key}", now=now)
    log.warning(
        "store.metered_uncollectible",
        payment_id=payment.id,
        vehicle_id=vehicle.id,
        month=month,
        amount_minor=payment.amount_minor,
    )


def _tell_operators(
    session: Session, context: dict[str, Any], *, dedupe_key: str, now: datetime
) -> None:
    """Every active operator told of an uncollectible month, in the app and by e-mail."""
    operators = session.scalars(
        select(User).where(User.role == Role.OPERATOR, User.is_active).order_by(User.id)
    )
    for operator in operators:
        notify_user(
            session,
            user_id=operator.id,
            email=operator.email,
            language=operator.language,
            kind="metered.uncollectible_operator",
            context={**context, "name": operator.full_name},
            dedupe_key=f"{dedupe_key}:{operator.id}",
            now=now,
        )


def _pause_for_dunning(
    session: Session, payment: Payment, vehicle_id: int, month: str, *, now: datetime
) -> tuple[int, ...]:
    """Switch off the car's metered options (now and any window to come) until the month is
    paid: one new configuration, the customer told. Returns the entitlements ended."""
    lock_vehicle(session, vehicle_id)  # the car's row before what it runs
    found = list(
        session.scalars(
            select(Entitlement).where(
                Entitlement.vehicle_id == vehicle_id,
                Entitlement.customer_id == payment.customer_id,
                Entitlement.source == "metered",
                Entitlement.state.in_(("delivering", "active")),
                or_(Entitlement.valid_until.is_(None), Entitlement.valid_until > now),
            )
        )
    )
    for entitlement in found:
        entitlements.end(session, entitlement, at=now, actor=ACTOR, now=now)
    vehicle = session.get_one(Vehicle, vehicle_id)
    if found:
        request_configuration(session, vehicle, reason="metered.unpaid", actor=ACTOR, now=now)
    customer = session.get_one(Customer, payment.customer_id)
    tell(
        session,
        customer,
        kind="metered.paused",
        context={
            "vin": vehicle.vin,
            "month": month,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
        },
        dedupe_key=f"metered.paused:{_month_key(customer.id, vehicle_id, month)}",
        now=now,
    )
    return tuple(entitlement.id for entitlement in found)


def _resume(session: Session, payment: Payment, *, dunning: Dunning, now: datetime) -> None:
    """The unpaid month is paid: the options paused for it on again from now (unless the car
    got them back meanwhile), one new configuration, the customer told."""
    lock_vehicle(session, dunning.vehicle_id)  # the car's row before what it runs
    vehicle = session.get_one(Vehicle, dunning.vehicle_id)
    granted = 0
    for entitlement_id in dunning.paused:
        paused = session.get_one(Entitlement, entitlement_id)
        running = session.scalar(
            select(Entitlement.id).where(
                Entitlement.vehicle_id == vehicle.id,
                Entitlement.feature_id == paused.feature_id,
                Entitlement.source == "metered",
                Entitlement.state.in_(("delivering", "active")),
                or_(Entitlement.valid_until.is_(None), Entitlement.valid_until > now),
            )
        )
        if running is not None:
            continue
        entitlements.grant(
            session,
            vehicle=vehicle,
            feature=session.get_one(Feature, paused.feature_id),
            source="metered",
            valid_from=now,
            valid_until=None,
            customer_id=paused.customer_id,
            offer_id=paused.offer_id,
            purchase_id=paused.purchase_id,
            spending_cap_minor=paused.spending_cap_minor,
            actor=ACTOR,
            now=now,
        )
        granted += 1
    if granted:
        request_configuration(session, vehicle, reason="metered.paid", actor=ACTOR, now=now)
    customer = session.get_one(Customer, payment.customer_id)
    tell(
        session,
        customer,
        kind="metered.resumed",
        context={
            "vin": vehicle.vin,
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
        },
        dedupe_key=f"metered.resumed:{payment.id}",
        now=now,
    )


def retry_month(
    session: Session, *, customer_id: int, month: str, dunning: Dunning, now: datetime
) -> Payment | None:
    """A dunning try: a new payment of the unpaid month (same lines, the customer's newest
    card), queued to be settled; a month paid meanwhile only switches its options back on."""
    key = _month_key(customer_id, dunning.vehicle_id, month)
    payments = list(
        session.scalars(
            select(Payment)
            .where(
                Payment.customer_id == customer_id,
                or_(Payment.idempotency_key == key, Payment.idempotency_key.like(f"{key}:%")),
            )
            .order_by(Payment.id)
        )
    )
    if not payments:
        return None
    if any(found.state == "captured" for found in payments):
        if dunning.paused:
            _resume(session, payments[-1], dunning=dunning, now=now)
        return None
    card = _card(session, dunning.vehicle_id, customer_id)
    if card is None:
        _month_declined(session, payments[-1], month=month, dunning=dunning, now=now)
        return None
    first = payments[0]
    payment = billing.begin_store_payment(
        session,
        customer_id=customer_id,
        kind="metered",
        lines=[billing_rules.LineDraft(**line) for line in first.invoice_lines or []],
        currency=first.currency,
        country=first.invoice_country or "",
        payment_method=card,
        idempotency_key=f"{key}:retry-{dunning.attempt}",
        actor=ACTOR,
        now=now,
        details={"vehicle_id": dunning.vehicle_id, "month": month, "attempt": dunning.attempt},
    )
    settle = {"payment_id": payment.id, "month": month, "card": card, **dunning.payload()}
    _queue(session, SETTLE_TOPIC, settle, f"{SETTLE_TOPIC}:{payment.id}", now, now)
    return payment


def _settling(session: Session, payment_id: int) -> tuple[Payment, Customer, Country | None]:
    """The payment to settle with its customer and the country it is invoiced in, in one
    statement. Billing reads both again while it invoices (`session.get`): as long as the
    caller holds them, the session has them and sends no statement for them."""
    payment, customer, country = session.execute(
        select(Payment, Customer, Country)
        .join(Customer, Customer.id == Payment.customer_id)
        .outerjoin(
            Country, Country.code == func.coalesce(Payment.invoice_country, Customer.country)
        )
        .where(Payment.id == payment_id)
    ).one()
    return payment, customer, country


# --- the chains --------------------------------------------------------------------------------


def _queue(
    session: Session, topic: str, payload: dict[str, Any], key: str, at: datetime, now: datetime
) -> None:
    enqueue(session, topic=topic, payload=payload, dedupe_key=key, now=now, run_after=at)


def handlers(settings: Settings, clock: Clock) -> dict[str, Handler]:
    provider = SharedProvider(settings)  # one client for every settlement of these handlers

    def caps(session: Session, payload: dict[str, Any]) -> None:
        try:
            check_caps(session, run=int(payload["run"]), now=clock.now())
        except Exception as error:  # the chain must never stop
            raise RetryLater(f"{type(error).__name__}: {error}") from error

    def month(session: Session, payload: dict[str, Any]) -> None:
        try:
            invoice_month(session, due=datetime.fromisoformat(payload["due"]), now=clock.now())
        except Exception as error:
            raise RetryLater(f"{type(error).__name__}: {error}") from error

    def charge(session: Session, payload: dict[str, Any]) -> None:
        now = clock.now()
        payment = begin_month_charge(
            session,
            vehicle_id=int(payload["vehicle_id"]),
            customer_id=int(payload["customer_id"]),
            month=str(payload["month"]),
            now=now,
        )
        if payment is None or payment.state in ("captured", "failed"):
            return
        # The pending payment is committed with this job before the provider is called.
        settle = {
            "payment_id": payment.id,
            "month": str(payload["month"]),
            "card": _card(session, int(payload["vehicle_id"]), int(payload["customer_id"])),
            **Dunning(int(payload["vehicle_id"])).payload(),
        }
        _queue(session, SETTLE_TOPIC, settle, f"{SETTLE_TOPIC}:{payment.id}", now, now)

    def charges(session: Session, payload: dict[str, Any]) -> None:
        now, month = clock.now(), str(payload["month"])
        cars = [(int(vehicle_id), int(customer_id)) for vehicle_id, customer_id in payload["cars"]]
        settles = []
        for vehicle_id, payment, card in begin_month_charges(session, cars, month=month, now=now):
            if payment.state in ("captured", "failed"):
                continue
            # The pending payments are committed with this job before the provider is called.
            settle = {
                "payment_id": payment.id,
                "month": month,
                "card": card or _card(session, vehicle_id, payment.customer_id),
                **Dunning(vehicle_id).payload(),
            }
            settles.append((f"{SETTLE_TOPIC}:{payment.id}", settle))
        _queue_many(session, SETTLE_TOPIC, settles, now)

    def settle(session: Session, payload: dict[str, Any]) -> None:
        # Customer and country stay referenced until the settlement is done, so billing finds
        # them in the session (which holds its objects weakly) instead of reading them again.
        payment, *kept = _settling(session, int(payload["payment_id"]))
        settle_month_charge(
            session,
            payment,
            card=str(payload["card"]),
            month=str(payload["month"]),
            provider=provider(),
            now=clock.now(),
            dunning=Dunning.of(payload) if "vehicle_id" in payload else None,
        )
        del kept

    def retry(session: Session, payload: dict[str, Any]) -> None:
        retry_month(
            session,
            customer_id=int(payload["customer_id"]),
            month=str(payload["month"]),
            dunning=Dunning.of(payload),
            now=clock.now(),
        )

    return {
        CAPS_TOPIC: caps,
        MONTH_TOPIC: month,
        CHARGE_TOPIC: charge,
        CHARGES_TOPIC: charges,
        SETTLE_TOPIC: settle,
        RETRY_TOPIC: retry,
    }


@dataclass(frozen=True)
class MonthUsage:
    """What a car's metered options have cost so far this month."""

    vin: str
    month: str
    currency: str
    lines: list[MeteredLine]

    @property
    def gross_minor(self) -> int:
        return sum(line.priced.gross_minor for line in self.lines)


def usage_of(session: Session, *, user: User, vin: str, now: datetime) -> MonthUsage:
    """The running amount of the owner's car this month (404 for anyone else)."""
    vehicle = entitlements.owned_vehicle(session, user, vin)
    customer = session.get_one(Customer, vehicle.owner_customer_id)
    lines = [
        line
        for line in this_month(session, vehicle, customer, now=now)
        if line.customer_id == customer.id
    ]
    start, _ = month_of(now, customer.country)
    currency = lines[0].currency if lines else "EUR"
    return MonthUsage(vehicle.vin, month_label(start, customer.country), currency, lines)
