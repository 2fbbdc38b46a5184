"""The store's pages in the customer's portal: a car's options with prices and reasons, the cart,
paying by card, the purchase's live status, and the car's own options (switches, subscriptions,
planned and recurring occurrences)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.deps import CustomerUser, actor_of
from caas.accounts.models import User
from caas.billing import methods
from caas.billing.methods_schemas import PaymentMethodRead
from caas.billing.provider import SandboxProvider
from caas.catalog import service as catalog
from caas.catalog.models import Platform
from caas.core.api import ClockDep, DbSession, SettingsDep
from caas.core.errors import CaasError, InvalidInput, NotFound
from caas.core.idempotency import check_key
from caas.notifications import service as notifications
from caas.privacy import suggestions
from caas.sales import service as sales
from caas.sales.models import Customer
from caas.store import entitlements, metering, purchases, schedules, subscriptions
from caas.store.models import Purchase
from caas.store.read import purchase_read, quote_read, store_view
from caas.store.schemas import (
    OfferRead,
    PurchaseCreate,
    PurchaseItem,
    PurchaseRead,
    QuoteCreate,
    StoreFeatureRead,
    StoreRead,
)
from caas.store.time_api import schedule_request
from caas.store.time_schemas import ScheduleCreate
from caas.vehicles.models import Vehicle
from caas.web.csrf import csrf_protect
from caas.web.display import zone_of_country
from caas.web.forms import FormErrors, FormValues, PostedForm, once_per_form, values_of
from caas.web.pages import CustomerPage, PageRoute, flash, language_of, render, see_other
from caas.web.strings import lookup, translate

# The pages (HTML errors, login redirects, CSRF on every form) and the JSON their script polls
# (errors keep the API's JSON shape), mounted together.
pages = APIRouter(
    prefix="/portal",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)
live = APIRouter(prefix="/portal", include_in_schema=False)
router = APIRouter()

# A cart that costs nothing now and renews nothing (free trials only) needs no card; the
# purchase still takes a payment method, so it is told there is none.
NO_CARD: Final = "no_card"
# Kinds that charge the card later (renewals, monthly use): the card is asked for even when
# nothing is paid today.
CARD_LATER: Final = frozenset({"subscription", "metered"})
# The form's fields of a cart line, per field of the service's `items.<i>.<name>`.
CART_FIELDS: Final = {
    "offer_id": "offer",
    "starts_at": "start",
    "ends_at": "end",
    "spending_cap_minor": "cap",
}
FINAL_PHASES: Final = frozenset({"active", "failed", "refunded"})
STEPS: Final = ("paid", "delivering", "applying", "active")
# Where each phase of a purchase stands on the four steps.
REACHED: Final = {"authorising": 0, "delivering": 1, "parking": 2, "applied": 3, "active": 4}
_MONEY = re.compile(r"^[0-9]{1,7}([.,][0-9]{1,2})?$")
_CART = TypeAdapter(list[PurchaseItem])


# --- what the pages show ----------------------------------------------------------------------


@dataclass(frozen=True)
class OwnedView:
    """One of the car's options as its owner sees it on the store page."""

    entitlement_id: int
    code: str
    name: str
    source: str
    state: str
    enabled: bool
    valid_from: datetime
    valid_until: datetime | None
    switchable: bool
    upcoming: bool
    # Pay per use: the monthly spending cap the owner chose (None: none).
    spending_cap_minor: int | None = None


@dataclass(frozen=True)
class SubscriptionView:
    id: int
    code: str
    name: str
    state: str
    period_end: datetime
    cancel_at_period_end: bool
    renews: bool
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class OccurrenceView:
    starts_at: datetime
    ends_at: datetime
    state: str


@dataclass(frozen=True)
class ScheduleView:
    id: int
    code: str
    name: str
    recurrence: str
    charge: str
    state: str
    upcoming: list[OccurrenceView]


def _customer_car(session: Session, user: User, vin: str) -> tuple[Customer, Vehicle]:
    """The customer and their car; anyone else's car is the same 404 as none."""
    return purchases.customer_car(session, user, vin)


def _model_name(session: Session, vehicle: Vehicle) -> str:
    return catalog.get_platform(session, vehicle.platform_id).name


def _option_names(session: Session, vehicle: Vehicle, language: str) -> dict[str, str]:
    """The names of the car's platform's options in `language`, by code."""
    return {
        feature.code: catalog.feature_text(feature, language)[0]
        for feature in catalog.platform_features(session, vehicle.platform_id)
    }


def _portal_render(
    request: Request,
    session: Session,
    user: User,
    customer: Customer,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> Response:
    """A portal page in the customer's zone, with the unread count in the menu."""
    _, _, unread = notifications.list_notifications(session, user_id=user.id, limit=1)
    page = {"customer": customer, "zone": zone_of_country(customer.country), "unread": unread}
    page.update(context)
    return render(request, template, page, status_code=status_code)


def _owned(
    session: Session, vehicle: Vehicle, names: dict[str, str], now: datetime
) -> list[OwnedView]:
    return [
        OwnedView(
            entitlement_id=option.entitlement_id,
            code=option.code,
            name=names.get(option.code, option.code),
            source=option.source,
            state=option.state,
            enabled=option.enabled,
            valid_from=option.valid_from,
            valid_until=option.valid_until,
            switchable=option.switchable,
            upcoming=option.valid_from > now,
            spending_cap_minor=option.spending_cap_minor,
        )
        for option in entitlements.owned_options(session, vehicle, at=now)
    ]


def _subscriptions(
    session: Session, user: User, vehicle: Vehicle, names: dict[str, str]
) -> list[SubscriptionView]:
    return [
        SubscriptionView(
            id=subscription.id,
            code=subscription.code,
            name=names.get(subscription.code, subscription.code),
            state=subscription.state,
            period_end=subscription.current_period_end,
            cancel_at_period_end=subscription.cancel_at_period_end,
            renews=subscription.state in subscriptions.RENEWING
            and not subscription.cancel_at_period_end,
            next_attempt_at=subscription.next_attempt_at,
        )
        for subscription in subscriptions.subscriptions_of(session, user=user, vin=vehicle.vin)
        if subscription.state in subscriptions.RENEWING
    ]


def _schedules(
    session: Session, user: User, vehicle: Vehicle, names: dict[str, str], now: datetime
) -> list[ScheduleView]:
    shown = []
    for schedule in schedules.schedules_of(session, user=user, vin=vehicle.vin):
        upcoming = [
            OccurrenceView(item.starts_at, item.ends_at, item.state)
            for item in schedules.upcoming(session, schedule, now=now)
        ]
        if schedule.state != "active" and not upcoming:
            continue
        shown.append(
            ScheduleView(
                id=schedule.id,
                code=schedule.code,
                name=names.get(schedule.code, schedule.code),
                recurrence=schedule.recurrence,
                charge=schedule.charge,
                state=schedule.state,
                upcoming=upcoming,
            )
        )
    return shown


def _store_page(
    request: Request,
    session: Session,
    user: User,
    vin: str,
    *,
    now: datetime,
    values: FormValues | None = None,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    customer, vehicle = _customer_car(session, user, vin)
    language = language_of(request, user)
    store = store_view(session, vehicle=vehicle, customer=customer, at=now, language=language)
    names = {feature.code: feature.name for feature in store.features}
    context = {
        "vehicle": vehicle,
        "model": _model_name(session, vehicle),
        "store": store,
        "owned": _owned(session, vehicle, names, now),
        "metered_spent": metering.spent_by_feature(
            metering.this_month(session, vehicle, customer, now=now)
        ),
        "currency": catalog.get_country(session, customer.country).currency,
        "subscriptions": _subscriptions(session, user, vehicle, names),
        "schedules": _schedules(session, user, vehicle, names, now),
        # None without the customer's tailored_offers consent: nothing is read then.
        "suggestions": suggestions.for_store_page(
            session, vehicle=vehicle, customer=customer, now=now, language=language
        ),
        "today": _local_today(customer, now).isoformat(),
        "values": values or {},
        "errors": errors or FormErrors(),
    }
    return _portal_render(
        request, session, user, customer, "portal/store.html", context, status_code=status_code
    )


# --- the cart: from the form to purchase items ------------------------------------------------


def _zone(customer: Customer) -> ZoneInfo:
    return ZoneInfo(zone_of_country(customer.country))


def _local_today(customer: Customer, now: datetime) -> date:
    return now.astimezone(_zone(customer)).date()


def _local_midnight(day: date, customer: Customer) -> datetime:
    """The start of `day` on the customer's clock."""
    return datetime.combine(day, time(0, 0), tzinfo=_zone(customer))


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return None


def _minor_units(typed: str) -> int | None:
    """ "50", "50.5", "50,50" as cents; None for anything else."""
    typed = typed.strip()
    if not _MONEY.match(typed):
        return None
    whole, _, cents = typed.replace(",", ".").partition(".")
    return int(whole) * 100 + int(cents.ljust(2, "0") or 0)


@dataclass
class Cart:
    """The chosen offers as purchase items, the option each belongs to, and what was wrong."""

    items: list[PurchaseItem]
    codes: list[str]
    errors: FormErrors


def _cart_line(
    feature: StoreFeatureRead,
    offer: OfferRead,
    values: FormValues,
    *,
    customer: Customer,
    now: datetime,
    language: str,
    errors: FormErrors,
) -> PurchaseItem | None:
    """One chosen offer as an item; its dates are days on the customer's clock (a start today
    is now; own dates end at the end of their last day)."""
    code = feature.code
    today = _local_today(customer, now)
    start_text = str(values.get(f"start.{code}", "")).strip()
    starts_at: datetime | None = None
    if start_text:
        start = _day(start_text)
        if start is None:
            errors.add(f"start.{code}", translate(language, "store.error.date"))
            return None
        if start < today:
            errors.add(f"start.{code}", translate(language, "store.error.past"))
            return None
        if start > today:
            starts_at = _local_midnight(start, customer)
    ends_at: datetime | None = None
    if offer.kind == "custom":
        end = _day(str(values.get(f"end.{code}", "")))
        if end is None:
            errors.add(f"end.{code}", translate(language, "store.error.end_needed"))
            return None
        ends_at = _local_midnight(end + timedelta(days=1), customer)
    cap: int | None = None
    cap_text = str(values.get(f"cap.{code}", "")).strip()
    if offer.kind == "metered" and cap_text:
        cap = _minor_units(cap_text)
        if cap is None or cap < 1:
            errors.add(f"cap.{code}", translate(language, "store.error.amount"))
            return None
    try:
        return PurchaseItem(
            offer_id=offer.id, starts_at=starts_at, ends_at=ends_at, spending_cap_minor=cap
        )
    except ValidationError as error:
        field = str(error.errors()[0]["loc"][0]) if error.errors() else "offer_id"
        errors.add(f"{CART_FIELDS.get(field, 'offer')}.{code}", str(error.errors()[0]["msg"]))
        return None


def cart_of(
    values: FormValues, store: StoreRead, *, customer: Customer, now: datetime, language: str
) -> Cart:
    """The store form's choices (one offer per option at most) as purchase items."""
    cart = Cart([], [], FormErrors())
    for feature in store.features:
        chosen = str(values.get(f"offer.{feature.code}", "")).strip()
        if not chosen:
            continue
        offer = next((o for o in feature.offers if str(o.id) == chosen), None)
        if offer is None:
            cart.errors.add(f"offer.{feature.code}", translate(language, "store.error.offer"))
            continue
        item = _cart_line(
            feature,
            offer,
            values,
            customer=customer,
            now=now,
            language=language,
            errors=cart.errors,
        )
        if item is not None:
            cart.items.append(item)
            cart.codes.append(feature.code)
    if not cart.items and not cart.errors:
        cart.errors.add(None, translate(language, "store.error.empty"))
    return cart


def cart_errors(error: CaasError | ValidationError, codes: list[str]) -> FormErrors:
    """A service's `items.<i>.<name>` as the store form's `<field>.<option>`."""
    errors = FormErrors()
    if isinstance(error, ValidationError):
        errors.add(None, str(error.errors()[0]["msg"]) if error.errors() else "invalid input")
        return errors
    parts = (error.field or "").split(".")
    if (
        len(parts) == 3
        and parts[0] == "items"
        and parts[1].isdigit()
        and int(parts[1]) < len(codes)
    ):
        errors.add(f"{CART_FIELDS.get(parts[2], 'offer')}.{codes[int(parts[1])]}", error.message)
    else:
        errors.add(None, error.message)
    return errors


def _needs_card(priced: purchases.Quote) -> bool:
    return priced.gross_minor > 0 or any(line.offer.kind in CARD_LATER for line in priced.lines)


# --- pages: the store, the checkout, buying -----------------------------------------------------


@pages.get("/store")
def store_home(request: Request, session: DbSession, user: CustomerPage) -> Response:
    """The menu's store: the car's store when there is one car, else a choice of cars."""
    customer = sales.customer_of_user(session, user)
    cars = session.execute(
        select(Vehicle, Platform.name)
        .join(Platform, Platform.id == Vehicle.platform_id)
        .where(Vehicle.owner_customer_id == customer.id)
        .order_by(Vehicle.built_at, Vehicle.id)
    ).all()
    if len(cars) == 1:
        return see_other(f"/portal/cars/{cars[0][0].vin}/store")
    return _portal_render(
        request, session, user, customer, "portal/store_cars.html", {"cars": cars}
    )


@pages.get("/cars/{vin}/store")
def store_page(
    request: Request, vin: str, session: DbSession, clock: ClockDep, user: CustomerPage
) -> Response:
    return _store_page(request, session, user, vin, now=clock.now())


def _checkout(
    request: Request,
    session: Session,
    user: User,
    customer: Customer,
    vehicle: Vehicle,
    priced: purchases.Quote,
    items: list[PurchaseItem],
    *,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    """The quote and the card form; a fresh Idempotency-Key per render, so a double click
    charges once and a new attempt after a refusal is a new purchase."""
    language = language_of(request, user)
    settings = request.app.state.settings
    saved = methods.default_method(session, customer.id)
    context = {
        "vehicle": vehicle,
        "model": _model_name(session, vehicle),
        "quote": quote_read(priced, language),
        "kinds": [line.offer.kind for line in priced.lines],
        "names": [line.name for line in priced.lines],
        "cart": json.dumps([item.model_dump(mode="json") for item in items]),
        "needs_card": _needs_card(priced),
        # The customer's default card, offered instead of typing one (`saved_card` posted).
        "saved_card": PaymentMethodRead.of(saved) if saved is not None else None,
        "tokens_url": f"{settings.browser_payment_url.rstrip('/')}/v1/tokens",
        "values": {"idempotency_key": uuid.uuid4().hex},
        "errors": errors or FormErrors(),
    }
    return _portal_render(
        request,
        session,
        user,
        customer,
        "portal/store_checkout.html",
        context,
        status_code=status_code,
    )


@pages.post("/cars/{vin}/store/quote")
def quote_cart(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    """The chosen offers priced (net, VAT, total) with the card form; nothing is written."""
    now = clock.now()
    values = values_of(form)
    customer, vehicle = _customer_car(session, user, vin)
    language = language_of(request, user)
    store = store_view(session, vehicle=vehicle, customer=customer, at=now, language=language)
    cart = cart_of(values, store, customer=customer, now=now, language=language)
    if cart.errors:
        return _store_page(
            request, session, user, vin, now=now, values=values, errors=cart.errors, status_code=422
        )
    try:
        priced = purchases.quote(
            session,
            vehicle=vehicle,
            customer=customer,
            items=QuoteCreate(items=cart.items).items,
            at=now,
            language=language,
        )
    except (CaasError, ValidationError) as error:
        status = error.status if isinstance(error, CaasError) else 422
        errors = cart_errors(error, cart.codes)
        return _store_page(
            request, session, user, vin, now=now, values=values, errors=errors, status_code=status
        )
    return _checkout(request, session, user, customer, vehicle, priced, cart.items)


def _purchase_url(vin: str, purchase_id: int) -> str:
    return f"/portal/cars/{vin}/purchases/{purchase_id}"


def _same_key(session: Session, vehicle: Vehicle, key: str) -> Purchase | None:
    """The car's purchase made with this form's key (a second click with another token)."""
    return next(
        (p for p in purchases.purchases_of_car(session, vehicle.id) if p.idempotency_key == key),
        None,
    )


@pages.post("/cars/{vin}/store/purchase")
def buy(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: CustomerPage,
) -> Response:
    """Buy the cart with the token the browser got from the provider (the card never comes
    here). As in the API: the purchase is committed before any money moves, and the form's key
    makes a double click or a retry the same purchase."""
    values = values_of(form)
    customer, vehicle = _customer_car(session, user, vin)
    language = language_of(request, user)
    key = str(values.get("idempotency_key", ""))
    token = str(values.get("card_token", "")).strip()
    if not token and values.get("saved_card") == "default":
        saved = methods.default_method(session, customer.id)
        token = saved.token if saved is not None else ""
    try:
        check_key(key)
        items = QuoteCreate(items=_CART.validate_json(values.get("cart") or "[]")).items
        if token:
            items = PurchaseCreate(items=items, payment_method=token).items
        else:
            priced = purchases.quote(
                session,
                vehicle=vehicle,
                customer=customer,
                items=items,
                at=clock.now(),
                language=language,
            )
            if _needs_card(priced):
                raise InvalidInput(translate(language, "store.error.card"), field="card_token")
        with session.begin_nested():
            purchase = purchases.begin_purchase(
                session,
                user=user,
                vin=vehicle.vin,
                items=items,
                payment_method=token or NO_CARD,
                idempotency_key=key,
                now=clock.now(),
            )
    except (ValidationError, CaasError) as error:
        if isinstance(error, CaasError) and error.code == "idempotency.key_reused":
            first = _same_key(session, vehicle, key)
            if first is not None:
                return see_other(_purchase_url(vehicle.vin, first.id))
        status = error.status if isinstance(error, CaasError) else 422
        errors = FormErrors()
        errors.add(None, error.message if isinstance(error, CaasError) else str(error))
        return _store_page(
            request, session, user, vin, now=clock.now(), errors=errors, status_code=status
        )
    session.commit()
    with SandboxProvider.from_settings(settings) as provider:
        purchase = purchases.drive_purchase(
            session,
            purchase,
            items=items,
            payment_method=token or NO_CARD,
            provider=provider,
            actor=actor_of(user),
            now=clock.now(),
        )
    if purchase.state == "failed":
        session.commit()
        errors = FormErrors()
        reason = reason_text(purchase.failure_code, purchase.failure_reason, language)
        errors.add(None, translate(language, "store.error.declined", reason=reason))
        priced = purchases.quote(
            session,
            vehicle=vehicle,
            customer=customer,
            items=items,
            at=clock.now(),
            language=language,
        )
        return _checkout(
            request, session, user, customer, vehicle, priced, items, errors=errors, status_code=402
        )
    return see_other(_purchase_url(vehicle.vin, purchase.id))


# --- the purchase's status, live ----------------------------------------------------------------


def _purchase_of(session: Session, user: User, vin: str, purchase_id: int) -> Purchase:
    """The customer's purchase for this car; anything else is a 404."""
    _, vehicle = _customer_car(session, user, vin)
    purchase = purchases.purchase_for(session, user, purchase_id)
    if purchase.vehicle_id != vehicle.id:
        raise NotFound("no such purchase", code="purchase.not_found")
    return purchase


def phase_of(read: PurchaseRead) -> str:
    """Where a purchase stands for its buyer: authorising, delivering, parking (the car waits
    to be parked), applied (the car runs it; the money is being taken), active, failed or
    refunded."""
    if read.state != "delivering":
        return read.state
    if read.waiting_for_parking:
        return "parking"
    states = [line.entitlement_state for line in read.lines if line.entitlement_id is not None]
    if states and all(state == "active" for state in states):
        return "applied"
    return "delivering"


def steps_of(phase: str) -> list[dict[str, str]]:
    """The four steps (paid, on its way, applied by the car, active), each done/current/todo."""
    reached = REACHED.get(phase, -1)
    return [
        {
            "key": key,
            "status": "done" if index < reached else "current" if index == reached else "todo",
        }
        for index, key in enumerate(STEPS)
    ]


class PurchaseLineStatus(BaseModel):
    """One line of the purchase as its status script redraws it."""

    code: str
    state: str = Field(description="The entitlement's state label, in the reader's language")
    entitlement_state: str | None


class PurchaseStatus(BaseModel):
    """What the purchase page needs to redraw itself while the customer watches."""

    id: int
    phase: str
    status: str = Field(description="The phase for a person, in the reader's language")
    steps: list[dict[str, str]]
    final: bool = Field(description="The purchase will not change by itself any more")
    failure_reason: str | None
    note: str | None = Field(description="What happened to the money, once failed or refunded")
    lines: list[PurchaseLineStatus]


def reason_text(code: str | None, reason: str | None, language: str) -> str:
    """Why a purchase failed or was refunded, for a person: the car's own reason (a code of the
    MQTT contract) and the platform's codes in the reader's language; anything else as is."""
    code, reason = code or "", reason or ""
    if code == "car_rejected":
        said = lookup(language, f"reason.{reason}") or reason
        return translate(language, "store.reason.car_rejected", reason=said)
    if lookup(language, f"store.reason.{code}") is not None:
        return translate(language, f"store.reason.{code}")
    return reason or code


def _status_of(read: PurchaseRead, language: str) -> PurchaseStatus:
    phase = phase_of(read)
    return PurchaseStatus(
        id=read.id,
        phase=phase,
        status=translate(
            language,
            f"store.status.{phase}",
            reason=reason_text(read.failure_code, read.failure_reason, language),
        ),
        steps=steps_of(phase),
        final=phase in FINAL_PHASES,
        failure_reason=read.failure_reason,
        note=None
        if phase not in ("failed", "refunded")
        else translate(language, "store.purchase.money_back")
        if phase == "refunded" and read.gross.amount_minor > 0
        else translate(language, "store.purchase.not_charged"),
        lines=[
            PurchaseLineStatus(
                code=line.code,
                state=translate(language, f"store.line.{line.entitlement_state or 'none'}"),
                entitlement_state=line.entitlement_state,
            )
            for line in read.lines
        ],
    )


@pages.get("/cars/{vin}/purchases/{purchase_id}")
def purchase_page(
    request: Request, vin: str, purchase_id: int, session: DbSession, user: CustomerPage
) -> Response:
    customer, vehicle = _customer_car(session, user, vin)
    purchase = _purchase_of(session, user, vin, purchase_id)
    language = language_of(request, user)
    read = purchase_read(session, purchase, language)
    context = {
        "vehicle": vehicle,
        "model": _model_name(session, vehicle),
        "purchase": read,
        "live": _status_of(read, language),
        "names": _option_names(session, vehicle, language),
    }
    return _portal_render(request, session, user, customer, "portal/store_purchase.html", context)


@live.get("/cars/{vin}/purchases/{purchase_id}/status", response_model=PurchaseStatus)
def purchase_status(
    request: Request, vin: str, purchase_id: int, session: DbSession, user: CustomerUser
) -> PurchaseStatus:
    purchase = _purchase_of(session, user, vin, purchase_id)
    language = language_of(request, user)
    return _status_of(purchase_read(session, purchase, language), language)


# --- the car's options: switches, subscriptions, schedules --------------------------------------


def _option_command(
    request: Request,
    session: Session,
    user: User,
    vin: str,
    *,
    values: FormValues,
    operation: str,
    body: dict[str, Any],
    now: datetime,
    act: Callable[[], dict[str, Any]],
    done: str,
) -> Response:
    """Run one of the owner's commands on the car's options once per form key, then back to
    the options with `done` flashed, or the refusal's reason (404 stays a 404)."""
    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=operation,
            request=body,
            now=now,
            act=act,
        )
    except CaasError as error:
        if error.status == 404:
            raise
        flash(request, "store.flash.refused", tone="danger", reason=error.message)
    else:
        flash(request, done)
    return see_other(f"/portal/cars/{vin.upper()}/store#options")


@pages.post("/cars/{vin}/options/{entitlement_id}")
def switch_option(
    request: Request,
    vin: str,
    entitlement_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    """Switch an option off or on, without a charge; the car follows."""
    values = values_of(form)
    enabled = values.get("enabled") == "on"
    now = clock.now()

    def act() -> dict[str, Any]:
        entitlements.switch(
            session, user=user, vin=vin, entitlement_id=entitlement_id, enabled=enabled, now=now
        )
        return {"enabled": enabled}

    return _option_command(
        request,
        session,
        user,
        vin,
        values=values,
        operation=f"option.switch:{vin.upper()}:{entitlement_id}",
        body={"enabled": enabled},
        now=now,
        act=act,
        done="store.flash.switched_on" if enabled else "store.flash.switched_off",
    )


@pages.post("/cars/{vin}/subscriptions/{subscription_id}/{command}")
def subscription_command(
    request: Request,
    vin: str,
    subscription_id: int,
    command: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    """Cancel a subscription at the end of its paid period, or resume it before then."""
    if command not in ("cancel", "resume"):
        raise InvalidInput("cancel or resume", field="command")
    _customer_car(session, user, vin)
    values = values_of(form)
    now = clock.now()
    run = subscriptions.cancel if command == "cancel" else subscriptions.resume

    def act() -> dict[str, Any]:
        run(session, user=user, subscription_id=subscription_id, now=now)
        return {"command": command}

    return _option_command(
        request,
        session,
        user,
        vin,
        values=values,
        operation=f"subscription.{command}:{subscription_id}",
        body={},
        now=now,
        act=act,
        done=f"store.flash.subscription_{command}",
    )


@pages.post("/cars/{vin}/schedules/{schedule_id}/cancel")
def cancel_schedule(
    request: Request,
    vin: str,
    schedule_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    """Cancel a planned or recurring option: the occurrences still to come do not happen."""
    _customer_car(session, user, vin)
    values = values_of(form)
    now = clock.now()

    def act() -> dict[str, Any]:
        schedules.cancel_schedule(session, user=user, schedule_id=schedule_id, now=now)
        return {"cancelled": schedule_id}

    return _option_command(
        request,
        session,
        user,
        vin,
        values=values,
        operation=f"schedule.cancel:{schedule_id}",
        body={},
        now=now,
        act=act,
        done="store.flash.schedule_cancelled",
    )


# --- planning an option ahead, once or recurring ------------------------------------------------


@dataclass(frozen=True)
class PlannableView:
    """An option that can be planned: its own-dates offer, priced per started day."""

    code: str
    name: str
    offer_id: int
    price: str


def _plannable(store: StoreRead) -> list[PlannableView]:
    return [
        PlannableView(feature.code, feature.name, offer.id, offer.price.gross.formatted)
        for feature in store.features
        if not feature.refusals
        for offer in feature.offers
        if offer.kind == "custom" and not offer.refusals
    ]


def _plan_page(
    request: Request,
    session: Session,
    user: User,
    vin: str,
    *,
    now: datetime,
    values: FormValues | None = None,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    customer, vehicle = _customer_car(session, user, vin)
    language = language_of(request, user)
    store = store_view(session, vehicle=vehicle, customer=customer, at=now, language=language)
    tomorrow = (_local_today(customer, now) + timedelta(days=1)).isoformat()
    settings = request.app.state.settings
    context = {
        "vehicle": vehicle,
        "model": _model_name(session, vehicle),
        "plannable": _plannable(store),
        "tokens_url": f"{settings.browser_payment_url.rstrip('/')}/v1/tokens",
        "values": values
        or {
            "idempotency_key": uuid.uuid4().hex,
            "recurrence": "once",
            "charge": "each",
            "start_date": tomorrow,
            "end_date": tomorrow,
            "start_time": "00:00",
            "end_time": "",
        },
        "errors": errors or FormErrors(),
    }
    return _portal_render(
        request, session, user, customer, "portal/store_plan.html", context, status_code=status_code
    )


@pages.get("/cars/{vin}/plan")
def plan_page(
    request: Request, vin: str, session: DbSession, clock: ClockDep, user: CustomerPage
) -> Response:
    return _plan_page(request, session, user, vin, now=clock.now())


@pages.post("/cars/{vin}/plan")
def plan_option(
    request: Request,
    vin: str,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    """Plan an option once, every year or every week, in the customer's local time; each
    occurrence is charged when it starts (or a once-only one now) with the card's token."""
    values = values_of(form)
    values["idempotency_key"] = values.get("idempotency_key") or uuid.uuid4().hex
    _, vehicle = _customer_car(session, user, vin)
    now = clock.now()
    try:
        body = ScheduleCreate.model_validate(
            {
                "offer_id": values.get("offer_id") or 0,
                "recurrence": values.get("recurrence", ""),
                "start_date": values.get("start_date", ""),
                "start_time": values.get("start_time") or "00:00",
                "end_date": values.get("end_date", ""),
                "end_time": values.get("end_time") or "24:00",
                "charge": values.get("charge") or "each",
                "card_token": values.get("card_token", ""),
            }
        )

        def act() -> dict[str, Any]:
            schedule = schedules.create_schedule(
                session, user=user, vin=vehicle.vin, request=schedule_request(body), now=now
            )
            return {"schedule_id": schedule.id}

        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"schedule.create:{vehicle.vin}",
            request=body.model_dump(mode="json"),
            now=now,
            act=act,
        )
    except (ValidationError, CaasError) as error:
        if isinstance(error, CaasError) and error.status == 404:
            raise
        status = error.status if isinstance(error, CaasError) else 422
        values["idempotency_key"] = uuid.uuid4().hex
        values["card_token"] = ""
        return _plan_page(
            request,
            session,
            user,
            vin,
            now=now,
            values=values,
            errors=FormErrors.of(error),
            status_code=status,
        )
    flash(request, "store.flash.planned")
    return see_other(f"/portal/cars/{vin.upper()}/store#options")


router.include_router(pages)
router.include_router(live)
