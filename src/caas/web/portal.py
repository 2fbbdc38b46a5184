"""The customer's portal: their orders as they progress, paying, their file, notifications."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session

from caas.accounts.deps import CustomerUser, actor_of
from caas.accounts.models import User
from caas.billing import service as billing
from caas.billing.provider import SandboxProvider
from caas.billing.rules import OPEN_STATES as OPEN_PAYMENT_STATES
from caas.billing.schemas import PaymentCreate
from caas.core.api import ClockDep, DbSession, SettingsDep
from caas.core.errors import CaasError
from caas.files import service as files
from caas.notifications import service as notifications
from caas.sales import service as sales
from caas.sales.models import Customer, Sale
from caas.store import upcoming
from caas.web.csrf import csrf_protect
from caas.web.display import (
    Step,
    factory_steps,
    journey_steps,
    next_step_key,
    state_tone,
    zone_of_country,
)
from caas.web.forms import FormErrors, FormValues, PostedForm, values_of
from caas.web.orders import customer_file_page, order_view
from caas.web.pages import CustomerPage, PageRoute, flash, language_of, render, see_other
from caas.web.strings import translate

router = APIRouter(
    prefix="/portal",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)
# JSON for the pages' own scripts: errors keep the API's JSON shape.
live_router = APIRouter(prefix="/portal", include_in_schema=False)

NOTIFICATIONS_PAGE = 50
# States after which an order no longer changes by itself: the live status stops asking.
FINAL_STATES = frozenset({"delivered", "cancelled"})


def _customer(session: Session, user: User) -> Customer:
    return sales.customer_of_user(session, user)


def _render(
    request: Request,
    session: Session,
    user: User,
    customer: Customer,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> Response:
    """A portal page: in the customer's zone, with the unread count in the menu."""
    _, _, unread = notifications.list_notifications(session, user_id=user.id, limit=1)
    page = {"customer": customer, "zone": zone_of_country(customer.country), "unread": unread}
    page.update(context)
    return render(request, template, page, status_code=status_code)


@router.get("")
def portal_home(_: CustomerPage) -> Response:
    return see_other("/portal/orders")


@router.get("/orders")
def orders_page(request: Request, session: DbSession, user: CustomerPage) -> Response:
    customer = _customer(session, user)
    mine, _ = sales.list_sales(session, user, sales.SaleFilter(limit=200))
    language = language_of(request, user)
    orders = [order_view(session, sale, language) for sale in mine]
    return _render(request, session, user, customer, "portal/orders.html", {"orders": orders})


def _render_order(
    request: Request,
    session: Session,
    user: User,
    sale_id: int,
    *,
    values: FormValues | None = None,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    customer = _customer(session, user)
    sale = sales.get_sale_for(session, user, sale_id)
    view = order_view(session, sale, language_of(request, user))
    settings = request.app.state.settings
    context = {
        "order": view,
        "next_step": next_step_key(sale.state),
        "live": sale.state not in FINAL_STATES,
        "tokens_url": f"{settings.browser_payment_url.rstrip('/')}/v1/tokens",
        "values": values or {"idempotency_key": uuid.uuid4().hex},
        "errors": errors or FormErrors(),
    }
    return _render(
        request, session, user, customer, "portal/order.html", context, status_code=status_code
    )


@router.get("/orders/{sale_id}")
def order_page(request: Request, sale_id: int, session: DbSession, user: CustomerPage) -> Response:
    return _render_order(request, session, user, sale_id)


@router.post("/orders/{sale_id}/pay")
def pay(
    request: Request,
    sale_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: CustomerPage,
) -> Response:
    """Pay with the token the browser got from the provider: the card never comes here.

    As in the API, the payment is committed as pending before any money moves, so a second
    click or a retry with the form's key finds it and never charges twice.
    """
    values = values_of(form)
    sales.get_sale_for(session, user, sale_id)  # another customer's order is a 404 page
    values["idempotency_key"] = values.get("idempotency_key") or uuid.uuid4().hex
    try:
        body = PaymentCreate.model_validate(
            {"kind": values.get("kind", ""), "card_token": values.get("card_token", "")}
        )
        with session.begin_nested():
            payment = billing.begin_sale_payment(
                session,
                user=user,
                sale_id=sale_id,
                kind=body.kind,
                card_token=body.card_token,
                idempotency_key=values["idempotency_key"],
                now=clock.now(),
            )
    except (ValidationError, CaasError) as error:
        status = error.status if isinstance(error, CaasError) else 422
        return _failed_payment(request, session, user, sale_id, FormErrors.of(error), status)
    session.commit()
    with SandboxProvider.from_settings(settings) as provider:
        payment = billing.drive_payment(
            session,
            payment,
            card_token=body.card_token,
            provider=provider,
            actor=actor_of(user),
            now=clock.now(),
        )
    if payment.state == "failed":
        reason = payment.failure_reason or payment.failure_code or "failed"
        errors = FormErrors()
        errors.add(None, translate(language_of(request, user), "pay.failed", reason=reason))
        return _failed_payment(request, session, user, sale_id, errors, 402)
    flash(
        request,
        "flash.payment_done" if payment.state == "captured" else "flash.payment_processing",
        tone="ok" if payment.state == "captured" else "info",
    )
    return see_other(f"/portal/orders/{sale_id}")


def _failed_payment(
    request: Request,
    session: Session,
    user: User,
    sale_id: int,
    errors: FormErrors,
    status_code: int,
) -> Response:
    # A fresh key: the next attempt is a new payment (with a new card token).
    values = {"idempotency_key": uuid.uuid4().hex}
    return _render_order(
        request, session, user, sale_id, values=values, errors=errors, status_code=status_code
    )


class LiveStatus(BaseModel):
    """What the order page needs to redraw itself while the customer watches."""

    state: str
    label: str
    tone: str
    updated_at: str
    journey: list[dict[str, str]] = Field(description="The six steps, each done/current/todo")
    factory: list[dict[str, str]] = Field(description="The eight stages, each done/current/todo")
    final: bool = Field(description="The order will not change by itself any more")
    payment_in_progress: bool = Field(description="A payment waits for the provider's answer")


def _steps(steps: list[Step]) -> list[dict[str, str]]:
    return [{"key": step.key, "status": step.status} for step in steps]


@live_router.get("/orders/{sale_id}/status", response_model=LiveStatus)
def live_status(
    request: Request, sale_id: int, session: DbSession, user: CustomerUser
) -> LiveStatus:
    sale: Sale = sales.get_sale_for(session, user, sale_id)
    return LiveStatus(
        state=sale.state,
        label=translate(language_of(request, user), f"state.{sale.state}"),
        tone=state_tone(sale.state),
        updated_at=sale.updated_at.isoformat(),
        journey=_steps(journey_steps(sale.state)),
        factory=_steps(factory_steps(sale.state)),
        final=sale.state in FINAL_STATES,
        payment_in_progress=any(
            payment.state in OPEN_PAYMENT_STATES
            for payment in billing.payments_for_sale(session, sale.id)
        ),
    )


@router.get("/file")
def file_page(
    request: Request, session: DbSession, clock: ClockDep, user: CustomerPage
) -> Response:
    scope = files.own_file(session, user)
    language = language_of(request, user)
    context = customer_file_page(session, scope, language=language, now=clock.now())
    context["order_base"] = "/portal/orders"
    context["upcoming_days"] = upcoming.DEFAULT_DAYS
    context["upcoming_charges"] = upcoming.upcoming_charges(session, user=user, now=clock.now())
    return _render(request, session, user, scope.customer, "portal/file.html", context)


@router.get("/notifications")
def notifications_page(
    request: Request,
    session: DbSession,
    user: CustomerPage,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    customer = _customer(session, user)
    items, total, unread = notifications.list_notifications(
        session, user_id=user.id, limit=NOTIFICATIONS_PAGE, offset=(page - 1) * NOTIFICATIONS_PAGE
    )
    pages = max((total + NOTIFICATIONS_PAGE - 1) // NOTIFICATIONS_PAGE, 1)
    context = {
        "notifications": items,
        "total": total,
        "page": page,
        "pages": pages,
        "unread_here": unread,
    }
    return _render(request, session, user, customer, "portal/notifications.html", context)


@router.post("/notifications/read")
def mark_all_read(
    request: Request, _: PostedForm, session: DbSession, clock: ClockDep, user: CustomerPage
) -> Response:
    notifications.mark_all_read(session, user_id=user.id, now=clock.now())
    flash(request, "flash.notifications_read")
    return see_other("/portal/notifications")
