"""What the customer reads of the store: a car's store (options, prices with VAT, reasons,
what it has), quotes and purchases, in the reader's language."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.billing import vat
from caas.billing.invoices import invoice_of_payment
from caas.billing.models import Payment
from caas.core.money import Money
from caas.core.schemas import MoneyRead
from caas.ota.models import ConfigurationVersion
from caas.sales.models import Customer
from caas.store import eligibility, offers, purchases
from caas.store import rules as store_rules
from caas.store.entitlements import owned_options
from caas.store.models import Entitlement, Purchase
from caas.store.rules import Refusal
from caas.store.schemas import (
    OfferRead,
    OwnedRead,
    PriceRead,
    PurchaseLineRead,
    PurchaseRead,
    QuoteLineRead,
    QuoteRead,
    RefusalRead,
    StoreFeatureRead,
    StoreRead,
)
from caas.vehicles.models import Vehicle

# Reasons that concern the option whatever the offer; the others are shown per offer.
OFFER_REASONS: Final = frozenset({"trial_used"})

STATUS_TEXTS: Final[dict[str, dict[str, str]]] = {
    "authorising": {"en": "Payment in progress", "es": "Pago en curso"},
    "delivering": {"en": "Paid, on its way to your car", "es": "Pagada, en camino a tu coche"},
    "parking": {
        "en": "Paid, waiting for the car to be parked",
        "es": "Pagada, esperando a que el coche esté aparcado",
    },
    "active": {"en": "Active on your car", "es": "Activa en tu coche"},
    "failed": {"en": "Payment refused", "es": "Pago rechazado"},
    "refunded": {"en": "Refunded: {reason}", "es": "Reembolsada: {reason}"},
}


def _money(amount_minor: int, currency: str, language: str) -> MoneyRead:
    return MoneyRead.of(Money(amount_minor, currency), language)


def _price(net: int, rate: int, vat: int, gross: int, currency: str, language: str) -> PriceRead:
    return PriceRead(
        net=_money(net, currency, language),
        vat_rate_bp=rate,
        vat=_money(vat, currency, language),
        gross=_money(gross, currency, language),
    )


def _refusal(refusal: Refusal, language: str, names: dict[str, str]) -> RefusalRead:
    return RefusalRead(
        reason=refusal.reason,
        message=eligibility.explain(refusal, language, names=names),
        details=refusal.details,
    )


def store_view(
    session: Session, *, vehicle: Vehicle, customer: Customer, at: datetime, language: str
) -> StoreRead:
    """Every option of the car's platform: its texts in `language`, its offers in the
    customer's country with net, VAT (the country's rate, per line) and gross, why the car
    cannot get it (per option, and per offer for the trial), and what the car has of it."""
    facts = eligibility.car_facts(session, vehicle, at=at)
    features = list(facts.platform.values())
    names = {feature.code: offers.feature_text(feature, language)[0] for feature in features}
    vat_rate_bp = vat.rate_at(session, customer.country, at)
    on_sale: dict[int, list[OfferRead]] = {feature.id: [] for feature in features}
    by_id = {feature.id: feature for feature in features}
    for offer in offers.offers_for(session, list(by_id), customer.country):
        feature = by_id[offer.feature_id]
        price = store_rules.price_line(offer.net_minor, vat_rate_bp)
        refused = [
            refusal
            for refusal in eligibility.refusals_for(
                facts, feature=feature, offer=offer, customer=customer
            )
            if refusal.reason in OFFER_REASONS
        ]
        on_sale[feature.id].append(
            OfferRead(
                id=offer.id,
                kind=offer.kind,
                duration=offer.duration,
                unit=offer.unit,
                price=_price(
                    price.net_minor,
                    price.vat_rate_bp,
                    price.vat_minor,
                    price.gross_minor,
                    offer.currency,
                    language,
                ),
                refund_policy=offer.refund_policy,
                refusals=[_refusal(r, language, names) for r in refused],
            )
        )
    owned: dict[str, list[OwnedRead]] = {}
    for option in owned_options(session, vehicle, at=at):
        owned.setdefault(option.code, []).append(
            OwnedRead(
                entitlement_id=option.entitlement_id,
                code=option.code,
                source=option.source,
                state=option.state,
                enabled=option.enabled,
                valid_from=option.valid_from,
                valid_until=option.valid_until,
                purchase_id=option.purchase_id,
            )
        )
    listed = []
    for feature in sorted(features, key=lambda f: (f.category, f.code)):
        name, description = offers.feature_text(feature, language)
        refused = [
            refusal
            for refusal in eligibility.refusals_for(
                facts, feature=feature, offer=None, customer=customer
            )
            if refusal.reason not in OFFER_REASONS
        ]
        listed.append(
            StoreFeatureRead(
                code=feature.code,
                name=name,
                description=description,
                category=feature.category,
                offers=on_sale[feature.id],
                refusals=[_refusal(r, language, names) for r in refused],
                owned=owned.get(feature.code, []),
            )
        )
    return StoreRead(vin=vehicle.vin, country=customer.country, language=language, features=listed)


def quote_read(priced: purchases.Quote, language: str) -> QuoteRead:
    currency = priced.currency
    return QuoteRead(
        vin=priced.vehicle.vin,
        lines=[
            QuoteLineRead(
                offer_id=line.offer.id,
                code=line.feature.code,
                kind=line.offer.kind,
                description=line.description,
                valid_from=line.valid_from,
                valid_until=line.valid_until,
                extends=line.extends,
                price=_price(
                    line.price.net_minor,
                    line.price.vat_rate_bp,
                    line.price.vat_minor,
                    line.price.gross_minor,
                    currency,
                    language,
                ),
            )
            for line in priced.lines
        ],
        net=_money(priced.net_minor, currency, language),
        vat=_money(priced.vat_minor, currency, language),
        gross=_money(priced.gross_minor, currency, language),
    )


def _waiting_for_parking(session: Session, purchase: Purchase) -> bool:
    """Delivering, and the car's newest answer to a version carrying it is `deferred`."""
    if purchase.state != "delivering" or purchase.configuration_version is None:
        return False
    newest = session.scalar(
        select(ConfigurationVersion.state)
        .where(
            ConfigurationVersion.vehicle_id == purchase.vehicle_id,
            ConfigurationVersion.version >= purchase.configuration_version,
        )
        .order_by(ConfigurationVersion.version.desc())
        .limit(1)
    )
    return newest == "deferred"


def purchase_read(session: Session, purchase: Purchase, language: str) -> PurchaseRead:
    """The purchase as its buyer sees it: paid, delivering (or waiting for the car to be
    parked), active, refunded with the reason; its lines, entitlements and invoice."""
    currency = purchase.currency
    lines = purchases.purchase_lines(session, purchase.id)
    states = dict(
        session.execute(
            select(Entitlement.id, Entitlement.state).where(Entitlement.purchase_id == purchase.id)
        ).all()
    )
    payment_state = invoice_number = None
    if purchase.payment_id is not None:
        payment_state = session.scalar(
            select(Payment.state).where(Payment.id == purchase.payment_id)
        )
        invoice = invoice_of_payment(session, purchase.payment_id)
        invoice_number = invoice.number if invoice else None
    waiting = _waiting_for_parking(session, purchase)
    texts = STATUS_TEXTS["parking" if waiting else purchase.state]
    status = (texts.get(language) or texts["en"]).format(reason=purchase.failure_reason or "")
    vin = session.scalar(select(Vehicle.vin).where(Vehicle.id == purchase.vehicle_id)) or ""
    return PurchaseRead(
        id=purchase.id,
        vin=vin,
        state=purchase.state,
        status=status,
        waiting_for_parking=waiting,
        lines=[
            PurchaseLineRead(
                offer_id=line.offer_id,
                code=line.code,
                kind=line.kind,
                description=line.description,
                valid_from=line.valid_from,
                valid_until=line.valid_until,
                price=_price(
                    line.net_minor,
                    line.vat_rate_bp,
                    line.vat_minor,
                    line.gross_minor,
                    currency,
                    language,
                ),
                entitlement_id=line.entitlement_id,
                entitlement_state=states.get(line.entitlement_id)
                if line.entitlement_id is not None
                else None,
            )
            for line in lines
        ],
        net=_money(purchase.net_minor, currency, language),
        vat=_money(purchase.vat_minor, currency, language),
        gross=_money(purchase.gross_minor, currency, language),
        payment_state=payment_state,
        invoice_number=invoice_number,
        failure_code=purchase.failure_code,
        failure_reason=purchase.failure_reason,
        configuration_version=purchase.configuration_version,
        deadline_at=purchase.deadline_at,
        created_at=purchase.created_at,
    )
