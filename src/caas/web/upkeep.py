"""Upkeep pages: the customer's service orders (confirm in a slot, cancel), their standing
consent and preferred workshop; the workshop's calendar (parts reserved, work done, cancel)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.accounts.models import User
from caas.core.api import ClockDep, DbSession
from caas.core.errors import CaasError, InvalidInput
from caas.notifications import service as notifications
from caas.sales import service as sales
from caas.upkeep import calendar, consent, orders, workshops
from caas.upkeep.api import preferences_read
from caas.upkeep.models import Part, ServiceOrder, Workshop, WorkshopStock
from caas.upkeep.read import order_read
from caas.web.csrf import csrf_protect
from caas.web.display import zone_of_country
from caas.web.forms import FormValues, PostedForm, once_per_form, values_of
from caas.web.pages import CustomerPage, PageRoute, WorkshopPage, flash, render, see_other

router = APIRouter(
    route_class=PageRoute, include_in_schema=False, dependencies=[Depends(csrf_protect)]
)

PORTAL = "/portal/upkeep"
WORKSHOP = "/workshop/upkeep"
CALENDAR_DAYS = 14


def _command(
    request: Request,
    session: Session,
    user: User,
    *,
    values: FormValues,
    operation: str,
    body: dict[str, Any],
    act: Callable[[], ServiceOrder | None],
    done: str,
    back: str,
    now: datetime,
) -> Response:
    """Run a command once per form key, then back to the page with `done` flashed (or the
    refusal's reason; someone else's order stays a 404)."""

    def run() -> dict[str, Any]:
        order = act()
        return {"order_id": order.id if order is not None else None}

    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=operation,
            request=body,
            now=now,
            act=run,
        )
    except CaasError as error:
        if error.status == 404:
            raise
        flash(request, "upkeep.flash.refused", tone="danger", reason=error.message)
    else:
        flash(request, done)
    return see_other(back)


# --- the customer ---------------------------------------------------------------------------


@router.get(PORTAL)
def portal_page(
    request: Request, session: DbSession, clock: ClockDep, user: CustomerPage
) -> Response:
    customer = sales.customer_of_user(session, user)
    now = clock.now()
    _, _, unread = notifications.list_notifications(session, user_id=user.id, limit=1)
    places = list(
        session.scalars(
            select(Workshop).where(Workshop.country == customer.country).order_by(Workshop.name)
        )
    )
    context = {
        "customer": customer,
        "zone": zone_of_country(customer.country),
        "unread": unread,
        "orders": [
            order_read(session, o, now=now) for o in orders.orders_of_customer(session, customer.id)
        ],
        "preferences": preferences_read(session, customer.id, customer.country),
        "workshops": places,
    }
    return render(request, "portal/upkeep.html", context)


@router.post(PORTAL + "/orders/{order_id}/confirm")
def portal_confirm(
    request: Request,
    order_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    values = values_of(form)
    now = clock.now()

    def act() -> ServiceOrder:
        order = orders.order_for_customer(session, user, order_id)
        try:
            start = datetime.fromisoformat(values.get("slot_start", ""))
        except ValueError:
            raise InvalidInput("choose one of the times", field="slot_start") from None
        return orders.confirm(session, order, slot_start=start, actor=actor_of(user), now=now)

    return _command(
        request, session, user, values=values, operation=f"web.upkeep.confirm:{order_id}",
        body={"slot_start": values.get("slot_start", "")}, act=act,
        done="upkeep.flash.confirmed", back=PORTAL, now=now,
    )  # fmt: skip


@router.post(PORTAL + "/orders/{order_id}/cancel")
def portal_cancel(
    request: Request,
    order_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    values = values_of(form)
    now = clock.now()

    def act() -> ServiceOrder:
        order = orders.order_for_customer(session, user, order_id)
        reason = values.get("reason", "")[:300]
        return orders.cancel(session, order, actor=actor_of(user), reason=reason, now=now)

    return _command(
        request, session, user, values=values, operation=f"web.upkeep.cancel:{order_id}",
        body={}, act=act, done="upkeep.flash.cancelled", back=PORTAL, now=now,
    )  # fmt: skip


def _limit_minor(text: str) -> int:
    """Whole units of the currency, as typed, in minor units."""
    cleaned = text.strip() or "0"
    if not cleaned.isdigit():
        raise InvalidInput("give the limit in whole euros", field="auto_limit")
    return int(cleaned) * 100


@router.post(PORTAL + "/preferences")
def portal_preferences(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    values = values_of(form)
    now = clock.now()
    customer = sales.customer_of_user(session, user)
    chosen = values.get("preferred_workshop_id", "")

    def act() -> None:
        consent.set_preferences(
            session,
            customer=customer,
            auto_order=values.get("auto_order") == "on",
            auto_limit_minor=_limit_minor(values.get("auto_limit", "")),
            preferred_workshop_id=int(chosen) if chosen.isdigit() else None,
            actor=actor_of(user),
            now=now,
        )
        return

    body = {k: values.get(k, "") for k in ("auto_order", "auto_limit", "preferred_workshop_id")}
    return _command(
        request, session, user, values=values, operation="web.upkeep.preferences",
        body=body, act=act, done="upkeep.flash.saved", back=PORTAL, now=now,
    )  # fmt: skip


# --- the workshop ---------------------------------------------------------------------------


@router.get(WORKSHOP)
def workshop_page(
    request: Request, session: DbSession, clock: ClockDep, user: WorkshopPage
) -> Response:
    place = workshops.workshop_of_staff(session, user.id)
    now = clock.now()
    days: list[tuple[Any, list[Any]]] = []
    stock: list[tuple[str, int]] = []
    if place is not None:
        zone = ZoneInfo(place.timezone)
        today = now.astimezone(zone).date()
        start = datetime.combine(today, time(0), tzinfo=zone)
        booked = calendar.bookings_of(
            session, place.id, start, start + timedelta(days=CALENDAR_DAYS)
        )
        by_day: dict[Any, list[Any]] = {}
        for order in booked:
            assert order.slot_start is not None
            by_day.setdefault(order.slot_start.astimezone(zone).date(), []).append(
                order_read(session, order, now=now)
            )
        days = sorted(by_day.items())
        stock = [
            (name, on_hand)
            for name, on_hand in session.execute(
                select(Part.name, WorkshopStock.on_hand)
                .join(Part, Part.id == WorkshopStock.part_id)
                .where(WorkshopStock.workshop_id == place.id)
                .order_by(Part.need, Part.id)
            ).all()
        ]
    context = {
        "workshop": place,
        "zone": place.timezone if place else "Europe/Madrid",
        "days": days,
        "stock": stock,
    }
    return render(request, "workshop/upkeep.html", context)


def _workshop_command(
    request: Request,
    session: Session,
    user: User,
    order_id: int,
    values: FormValues,
    name: str,
    command: Callable[[ServiceOrder], ServiceOrder],
    now: datetime,
    body: dict[str, Any] | None = None,
) -> Response:
    def act() -> ServiceOrder:
        return command(orders.order_for_workshop(session, user, order_id))

    return _command(
        request, session, user, values=values, operation=f"web.upkeep.{name}:{order_id}",
        body=body or {}, act=act, done=f"upkeep.flash.{name}", back=WORKSHOP, now=now,
    )  # fmt: skip


@router.post(WORKSHOP + "/orders/{order_id}/parts-reserved")
def workshop_parts(
    request: Request, order_id: int, form: PostedForm, session: DbSession, clock: ClockDep,
    user: WorkshopPage,
) -> Response:  # fmt: skip
    now = clock.now()
    return _workshop_command(
        request, session, user, order_id, values_of(form), "parts_reserved",
        lambda order: orders.reserve_parts(session, order, actor=actor_of(user), now=now), now,
    )  # fmt: skip


@router.post(WORKSHOP + "/orders/{order_id}/done")
def workshop_done(
    request: Request, order_id: int, form: PostedForm, session: DbSession, clock: ClockDep,
    user: WorkshopPage,
) -> Response:  # fmt: skip
    now = clock.now()
    values = values_of(form)
    odometer = values.get("odometer_km", "").strip()

    def done(order: ServiceOrder) -> ServiceOrder:
        if not odometer.isdigit():
            raise InvalidInput("give the odometer in whole km", field="odometer_km")
        return orders.complete(
            session, order, workshop_user=user, odometer_km=int(odometer), now=now
        )

    return _workshop_command(
        request, session, user, order_id, values, "done", done, now, {"odometer_km": odometer}
    )


@router.post(WORKSHOP + "/orders/{order_id}/cancel")
def workshop_cancel(
    request: Request, order_id: int, form: PostedForm, session: DbSession, clock: ClockDep,
    user: WorkshopPage,
) -> Response:  # fmt: skip
    now = clock.now()
    values = values_of(form)
    reason = values.get("reason", "")[:300]
    return _workshop_command(
        request, session, user, order_id, values, "cancelled",
        lambda order: orders.cancel(session, order, actor=actor_of(user), reason=reason, now=now),
        now,
    )  # fmt: skip
