"""Tailored offers: from the use a customer agreed to let us read, a cheaper way to buy what
they use or would use, with the reason and the saving.

Read only while the customer's `tailored_offers` consent is in force: without it nothing is
read or computed (`ConsentRequired`). Prices are gross, the offer's net with the VAT in force
today in the customer's country. Four bases (`Suggestion.basis`):

- `metered`: last calendar month's metered use as the store rated it
  (`caas.store.metering.rated_usage`); a monthly subscription or a month's window against the
  month, a yearly subscription against twelve such months.
- `season`: the days of the last 30 on which the car was driven in its country's winter
  (`WINTER_MONTHS`, the country's zone) or, with the `driving_style` consent in force (the
  outside temperature is one of its readings), below `COLD_C`: a month's window of a traction
  feature against a day's window for each of those days.
- `distance`: at least `MANY_KM` on the odometer (service data) in the last 30 days, and a
  driving feature held by a monthly subscription: the yearly subscription against twelve months.
- `motorway`: only with `driving_style` in force too (speed is stored only under it): the time
  and distance driven at `MOTORWAY_KMH` or more in the last 30 days, from consecutive samples
  (gaps over `MAX_GAP` cut), priced by a metered offer per km against a monthly subscription.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal

from babel.dates import format_skeleton
from babel.numbers import format_decimal
from sqlalchemy import ColumnElement, Float, and_, cast, func, literal_column, select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.billing.vat import rate_at
from caas.catalog.models import Feature
from caas.core.errors import Forbidden
from caas.core.money import Money
from caas.privacy import service as consents
from caas.privacy.rules import DRIVING_STYLE, TAILORED_OFFERS
from caas.sales.models import Customer
from caas.store import entitlements, metering
from caas.store.models import Entitlement, Offer
from caas.store.offers import feature_text, offers_for
from caas.store.rules import COUNTING_STATES, price_line
from caas.vehicles.models import TelemetrySample, Vehicle

Basis = Literal["metered", "season", "distance", "motorway"]

# What the telemetry bases read: the last `PERIOD` before now.
PERIOD: Final = timedelta(days=30)
# Winter in our countries (all in the northern hemisphere), months of the country's zone.
WINTER_MONTHS: Final = frozenset({12, 1, 2})
COLD_C: Final = 3.0  # a day driven at or below this outside temperature is a cold day
TEMPERATURE_READING: Final = "outside_temperature_c"
SEASON_CATEGORY: Final = "traction"  # the features a cold day calls for
MANY_KM: Final = 1_500  # in `PERIOD`: about 18,000 km a year
DRIVING_CATEGORIES: Final = frozenset({"performance", "safety", "autonomy"})
MOTORWAY_KMH: Final = 90.0
MOTORWAY_CATEGORY: Final = "autonomy"  # the features made for motorways
MAX_GAP: Final = timedelta(seconds=60)  # longer between two samples: the car was off

# The offers compared, and how many months each covers.
COMPARED: Final[dict[tuple[str, str], int]] = {
    ("subscription", "1M"): 1,
    ("window", "1M"): 1,
    ("subscription", "1Y"): 12,
}

TEXTS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "reason": "In {month} you paid {paid} for {feature} by the {unit} ({quantity} {units}); "
        "{offer} costs {price}{per}.",
        "saving": "You would save {saving}{per}.",
        "per.1": " a month",
        "per.12": " a year",
        "offer.subscription.1M": "the monthly subscription",
        "offer.subscription.1Y": "the yearly subscription",
        "offer.window.1M": "a month's pass",
        "reason.season": "In the last 30 days you drove on {days} days of winter or cold "
        "(3 °C or less); {feature} by the day would have cost {paid}, {offer} costs {price}.",
        "reason.distance": "You drove {km} km in the last 30 days; you pay {feature} month by "
        "month ({paid} over twelve months), {offer} costs {price}.",
        "reason.motorway": "In the last 30 days you drove {hours} h on motorways ({km} km); "
        "{feature} by the km would have cost {paid}, {offer} costs {price}.",
    },
    "es": {
        "reason": "En {month} pagaste {paid} por {feature} por {unit} ({quantity} {units}); "
        "{offer} cuesta {price}{per}.",
        "saving": "Ahorrarías {saving}{per}.",
        "per.1": " al mes",
        "per.12": " al año",
        "offer.subscription.1M": "la suscripción mensual",
        "offer.subscription.1Y": "la suscripción anual",
        "offer.window.1M": "el pase de un mes",
        "reason.season": "En los últimos 30 días condujiste {days} días de invierno o de frío "
        "(3 °C o menos); {feature} por días habría costado {paid}, {offer} cuesta {price}.",
        "reason.distance": "Condujiste {km} km en los últimos 30 días; pagas {feature} mes a "
        "mes ({paid} en doce meses), {offer} cuesta {price}.",
        "reason.motorway": "En los últimos 30 días condujiste {hours} h por autopista ({km} km); "
        "{feature} por km habría costado {paid}, {offer} cuesta {price}.",
    },
}
UNIT_NAMES: Final[dict[str, dict[str, str]]] = {
    "en": {"hour": "hour", "km": "km", "activation": "activation"},
    "es": {"hour": "hora", "km": "km", "activation": "activación"},
}


class ConsentRequired(Forbidden):
    """The customer has not consented to tailored offers: nothing is read."""

    code = "privacy.consent_required"


@dataclass(frozen=True)
class Suggestion:
    """A cheaper offer for how the car is used, with what it saves."""

    offer: Offer
    code: str
    month: str  # the period read: a month (2026-01) or the last 30 days (first/last day)
    quantity: Decimal  # metered: the use; season: days; distance, motorway: km
    unit: str
    paid: Money  # what the same use costs the way it is (or would be) bought, gross
    price: Money  # the offer's gross price
    months: int  # months the offer covers (1 or 12)
    saving: Money  # paid minus the price, over `months`
    reason: str
    saving_text: str
    basis: Basis = "metered"


def _text(language: str, key: str) -> str:
    return TEXTS.get(language, TEXTS["en"]).get(key, TEXTS["en"][key])


def _last_month(now: datetime, country: str) -> tuple[datetime, datetime]:
    this_start, _ = metering.month_of(now, country)
    return metering.month_of(this_start - timedelta(seconds=1), country)


def suggestions_for(
    session: Session, *, user: User, vin: str, now: datetime, language: str
) -> list[Suggestion]:
    """Cheaper offers for the owner's car, largest saving first (404 for anyone else's car;
    `ConsentRequired` without the `tailored_offers` consent)."""
    vehicle = entitlements.owned_vehicle(session, user, vin)
    customer = session.get_one(Customer, vehicle.owner_customer_id)
    if not consents.may_use(session, customer.id, TAILORED_OFFERS):
        raise ConsentRequired(
            "tailored offers need your consent (privacy: tailored_offers)", field=TAILORED_OFFERS
        )
    return _suggest(session, vehicle, customer, now=now, language=language)


def for_store_page(
    session: Session, *, vehicle: Vehicle, customer: Customer, now: datetime, language: str
) -> list[Suggestion] | None:
    """The suggestions for the car's store page; None (nothing read) without the consent."""
    if not consents.may_use(session, customer.id, TAILORED_OFFERS):
        return None
    return _suggest(session, vehicle, customer, now=now, language=language)


def _suggest(
    session: Session, vehicle: Vehicle, customer: Customer, *, now: datetime, language: str
) -> list[Suggestion]:
    found = _from_metered(session, vehicle, customer, now=now, language=language)
    found += _from_telemetry(session, vehicle, customer, now=now, language=language)
    found.sort(key=lambda s: (-s.saving.amount_minor // s.months, s.code, s.offer.id))
    return found


def _from_metered(
    session: Session, vehicle: Vehicle, customer: Customer, *, now: datetime, language: str
) -> list[Suggestion]:
    start, end = _last_month(now, customer.country)
    month = metering.month_label(start, customer.country)
    month_name = format_skeleton(
        "yMMMM", start.astimezone(metering.zone_of(customer.country)).date(), locale=language
    )
    used: dict[tuple[int, str, str], tuple[Decimal, int, str]] = {}
    for line in metering.rated_usage(session, [vehicle.id], start=start, end=end):
        if line.customer_id != customer.id:
            continue  # a previous owner's use
        key = (line.feature_id, line.code, line.unit)
        quantity, paid, _ = used.get(key, (Decimal(0), 0, line.currency))
        used[key] = (quantity + line.quantity, paid + line.priced.gross_minor, line.currency)
    if not used:
        return []
    vat_bp = rate_at(session, customer.country, now)
    found: list[Suggestion] = []
    for (feature_id, code, unit), (quantity, paid_minor, currency) in used.items():
        feature = session.get_one(Feature, feature_id)
        name, _ = feature_text(feature, language)
        for offer in offers_for(session, [feature_id], customer.country):
            months = COMPARED.get((offer.kind, offer.duration))
            if months is None or offer.currency != currency:
                continue
            price = price_line(offer.net_minor, vat_bp).gross_minor
            paid = paid_minor * months
            if price >= paid:
                continue
            found.append(
                _suggestion(
                    offer,
                    code=code,
                    name=name,
                    month=month,
                    month_name=month_name,
                    quantity=quantity,
                    unit=unit,
                    paid=Money(paid_minor, currency),
                    price=Money(price, currency),
                    months=months,
                    saving=Money(paid - price, currency),
                    language=language,
                )
            )
    return found


def _suggestion(
    offer: Offer,
    *,
    code: str,
    name: str,
    month: str,
    month_name: str,
    quantity: Decimal,
    unit: str,
    paid: Money,
    price: Money,
    months: int,
    saving: Money,
    language: str,
) -> Suggestion:
    locale = language
    units = metering.UNIT_WORDS.get(language, metering.UNIT_WORDS["en"]).get(unit, unit)
    unit_name = UNIT_NAMES.get(language, UNIT_NAMES["en"]).get(unit, unit)
    per = _text(language, f"per.{months}")
    reason = _text(language, "reason").format(
        month=month_name,
        paid=paid.format(locale),
        feature=name,
        unit=unit_name,
        quantity=format_decimal(quantity, locale=locale),
        units=units,
        offer=_text(language, f"offer.{offer.kind}.{offer.duration}"),
        price=price.format(locale),
        per=per,
    )
    return Suggestion(
        offer=offer,
        code=code,
        month=month,
        quantity=quantity,
        unit=unit,
        paid=paid,
        price=price,
        months=months,
        saving=saving,
        reason=reason,
        saving_text=_text(language, "saving").format(saving=saving.format(locale), per=per),
    )


@dataclass(frozen=True)
class _Car:
    """What the telemetry bases need to know of the car, read once."""

    vehicle: Vehicle
    customer: Customer
    start: datetime  # of the period read: 30 days ago, or when the owner got the car
    end: datetime
    period: str
    held: frozenset[str]  # features the car runs now
    monthly: frozenset[str]  # of them, held by a monthly subscription
    features: dict[str, Feature]  # the platform's, by code
    offers: dict[tuple[int, str, str], Offer]  # by feature, kind and duration
    vat_bp: int
    language: str


def _from_telemetry(
    session: Session, vehicle: Vehicle, customer: Customer, *, now: datetime, language: str
) -> list[Suggestion]:
    start = max(now - PERIOD, vehicle.owner_since or vehicle.built_at)
    zone = metering.zone_of(customer.country)
    period = (
        f"{start.astimezone(zone).date().isoformat()}/{now.astimezone(zone).date().isoformat()}"
    )
    features = {
        feature.code: feature
        for feature in session.scalars(
            select(Feature).where(Feature.platform_id == vehicle.platform_id, Feature.active)
        )
    }
    held = session.execute(
        select(Entitlement.code, Offer.kind, Offer.duration)
        .outerjoin(Offer, Offer.id == Entitlement.offer_id)
        .where(
            Entitlement.vehicle_id == vehicle.id,
            Entitlement.state.in_(COUNTING_STATES),
            Entitlement.valid_from <= now,
            (Entitlement.valid_until.is_(None)) | (Entitlement.valid_until > now),
        )
    ).all()
    offers = offers_for(session, [f.id for f in features.values()], customer.country)
    car = _Car(
        vehicle=vehicle,
        customer=customer,
        start=start,
        end=now,
        period=period,
        held=frozenset(code for code, _, _ in held),
        monthly=frozenset(
            code for code, kind, duration in held if (kind, duration) == ("subscription", "1M")
        ),
        features=features,
        offers={(o.feature_id, o.kind, o.duration): o for o in offers},
        vat_bp=rate_at(session, customer.country, now),
        language=language,
    )
    driving_style = consents.may_use(session, customer.id, DRIVING_STYLE)
    found = _season(session, car, driving_style=driving_style)
    found += _distance(session, car)
    if driving_style:
        found += _motorway(session, car)
    return found


def _in_period(car: _Car) -> list[ColumnElement[bool]]:
    return [
        TelemetrySample.vin == car.vehicle.vin,
        TelemetrySample.at >= car.start,
        TelemetrySample.at < car.end,
    ]


def _gross(car: _Car, net_minor: int) -> int:
    return price_line(net_minor, car.vat_bp).gross_minor


def _season(session: Session, car: _Car, *, driving_style: bool) -> list[Suggestion]:
    """A month's window of a traction feature the car lacks, against a day's window for each
    day of the period driven in winter or in the cold."""
    zone = metering.zone_of(car.customer.country).key
    day = func.date(func.timezone(zone, TelemetrySample.at)).label("day")
    temperature = cast(TelemetrySample.readings[TEMPERATURE_READING].astext, Float)
    # The outside temperature is read only while driving_style is in force.
    cold = func.bool_or(temperature <= COLD_C) if driving_style else literal_column("false")
    rows: list[tuple[date, bool | None]] = [
        (row[0], row[1])
        for row in session.execute(
            select(day, cold)
            .where(*_in_period(car), TelemetrySample.parked.is_(False))
            .group_by(day)
        )
    ]
    days = sum(1 for found_day, was_cold in rows if was_cold or found_day.month in WINTER_MONTHS)
    if days == 0:
        return []
    found = []
    for code, feature in car.features.items():
        if feature.category != SEASON_CATEGORY or code in car.held:
            continue
        daily = car.offers.get((feature.id, "window", "1D"))
        monthly = car.offers.get((feature.id, "window", "1M"))
        if daily is None or monthly is None or daily.currency != monthly.currency:
            continue
        paid = days * _gross(car, daily.net_minor)
        price = _gross(car, monthly.net_minor)
        if price < paid:
            found.append(
                _telemetry_suggestion(
                    car,
                    "season",
                    monthly,
                    feature,
                    quantity=Decimal(days),
                    unit="day",
                    paid=paid,
                    price=price,
                    months=1,
                    days=format_decimal(days, locale=car.language),
                )
            )
    return found


def _distance(session: Session, car: _Car) -> list[Suggestion]:
    """The yearly subscription of a driving feature the car holds month by month, when the car
    is driven a lot (the odometer: service data)."""
    if not car.monthly:
        return []
    driven = session.execute(
        select(func.max(TelemetrySample.odometer_km) - func.min(TelemetrySample.odometer_km)).where(
            *_in_period(car)
        )
    ).scalar_one()
    if driven is None or driven < MANY_KM:
        return []
    km = Decimal(int(driven))
    found = []
    for code in sorted(car.monthly):
        feature = car.features.get(code)
        if feature is None or feature.category not in DRIVING_CATEGORIES:
            continue
        monthly = car.offers.get((feature.id, "subscription", "1M"))
        yearly = car.offers.get((feature.id, "subscription", "1Y"))
        if monthly is None or yearly is None or monthly.currency != yearly.currency:
            continue
        paid = 12 * _gross(car, monthly.net_minor)
        price = _gross(car, yearly.net_minor)
        if price < paid:
            found.append(
                _telemetry_suggestion(
                    car,
                    "distance",
                    yearly,
                    feature,
                    quantity=km,
                    unit="km",
                    paid=paid,
                    price=price,
                    months=12,
                    km=format_decimal(km, locale=car.language),
                )
            )
    return found


def _motorway(session: Session, car: _Car) -> list[Suggestion]:
    """A monthly subscription of a motorway feature the car lacks, against its metered price
    for the kilometres driven on motorways (speed: only with the driving_style consent)."""
    earlier = func.lag(TelemetrySample.at).over(order_by=(TelemetrySample.at, TelemetrySample.seq))
    samples = (
        select(
            TelemetrySample.at,
            TelemetrySample.speed_kmh,
            TelemetrySample.parked,
            earlier.label("earlier"),
        )
        .where(*_in_period(car))
        .subquery()
    )
    seconds = func.extract("epoch", samples.c.at - samples.c.earlier)
    total_seconds, total_km = session.execute(
        select(
            func.coalesce(func.sum(seconds), 0),
            func.coalesce(func.sum(seconds * samples.c.speed_kmh / 3600), 0),
        ).where(
            and_(
                samples.c.earlier.is_not(None),
                seconds <= MAX_GAP.total_seconds(),
                samples.c.speed_kmh >= MOTORWAY_KMH,
                samples.c.parked.is_(False),
            )
        )
    ).one()
    km = Decimal(str(total_km)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    if km <= 0:
        return []
    hours = (Decimal(str(total_seconds)) / 3600).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    found = []
    for code, feature in car.features.items():
        if feature.category != MOTORWAY_CATEGORY or code in car.held:
            continue
        metered = car.offers.get((feature.id, "metered", ""))
        monthly = car.offers.get((feature.id, "subscription", "1M"))
        if metered is None or monthly is None or metered.unit != "km":
            continue
        if metered.currency != monthly.currency:
            continue
        paid = _gross(car, metering.rate(km, metered.net_minor))
        price = _gross(car, monthly.net_minor)
        if price < paid:
            found.append(
                _telemetry_suggestion(
                    car,
                    "motorway",
                    monthly,
                    feature,
                    quantity=km,
                    unit="km",
                    paid=paid,
                    price=price,
                    months=1,
                    km=format_decimal(km, locale=car.language),
                    hours=format_decimal(hours, locale=car.language),
                )
            )
    return found


def _telemetry_suggestion(
    car: _Car,
    basis: Basis,
    offer: Offer,
    feature: Feature,
    *,
    quantity: Decimal,
    unit: str,
    paid: int,
    price: int,
    months: int,
    **facts: str,
) -> Suggestion:
    language = car.language
    name, _ = feature_text(feature, language)
    currency = offer.currency
    per = _text(language, f"per.{months}")
    saving = Money(paid - price, currency)
    reason = _text(language, f"reason.{basis}").format(
        feature=name,
        paid=Money(paid, currency).format(language),
        offer=_text(language, f"offer.{offer.kind}.{offer.duration}"),
        price=Money(price, currency).format(language),
        **facts,
    )
    return Suggestion(
        offer=offer,
        code=feature.code,
        month=car.period,
        quantity=quantity,
        unit=unit,
        paid=Money(paid, currency),
        price=Money(price, currency),
        months=months,
        saving=saving,
        reason=reason,
        saving_text=_text(language, "saving").format(saving=saving.format(language), per=per),
        basis=basis,
    )
