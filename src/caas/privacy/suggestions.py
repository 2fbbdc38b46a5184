"""Tailored offers: from the metered use a customer agreed to let us read, a cheaper way to
buy what they already use, with the reason and the saving.

Read only while the customer's `tailored_offers` consent is in force: without it nothing is
read or computed (`ConsentRequired`). The month compared is the customer's last calendar month;
what they paid is their metered use rated by the store (`caas.store.metering.rated_usage`,
gross with VAT); an offer's price is its net with the VAT in force today in their country. An
offer is suggested when it would have cost less than what they paid: a monthly subscription or
a month's window against the month, a yearly subscription against twelve such months.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from babel.dates import format_skeleton
from babel.numbers import format_decimal
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.billing.vat import rate_at
from caas.catalog.models import Feature
from caas.core.errors import Forbidden
from caas.core.money import Money
from caas.privacy import service as consents
from caas.privacy.rules import TAILORED_OFFERS
from caas.sales.models import Customer
from caas.store import entitlements, metering
from caas.store.models import Offer
from caas.store.offers import feature_text, offers_for
from caas.store.rules import price_line
from caas.vehicles.models import Vehicle

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
    """A cheaper offer for a feature the car used last month, with what it saves."""

    offer: Offer
    code: str
    month: str
    quantity: Decimal
    unit: str
    paid: Money  # last month's metered use, gross, over `months`
    price: Money  # the offer's gross price
    months: int  # months the offer covers (1 or 12)
    saving: Money  # paid over the same months minus the price
    reason: str
    saving_text: str


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
    found.sort(key=lambda s: (-s.saving.amount_minor // s.months, s.code, s.offer.id))
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
