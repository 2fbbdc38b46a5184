"""The customer's saved cards in the portal: the list, adding one (tokenised in the browser at
the payment provider, like paying), making one the default, removing one."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.accounts.models import User
from caas.billing import methods
from caas.billing.methods_schemas import PaymentMethodCreate, PaymentMethodRead
from caas.billing.provider import SandboxProvider
from caas.core.api import ClockDep, DbSession, SettingsDep
from caas.core.errors import CaasError
from caas.notifications import service as notifications
from caas.sales import service as sales
from caas.web.csrf import csrf_protect
from caas.web.display import zone_of_country
from caas.web.forms import FormErrors, FormValues, PostedForm, once_per_form, values_of
from caas.web.pages import CustomerPage, PageRoute, flash, render, see_other

router = APIRouter(
    prefix="/portal",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)

PAGE = "/portal/payment-methods"


def _page(
    request: Request,
    session: Session,
    user: User,
    *,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    """The list and the form to add a card, with a fresh form key per render."""
    customer = sales.customer_of_user(session, user)
    _, _, unread = notifications.list_notifications(session, user_id=user.id, limit=1)
    settings = request.app.state.settings
    context = {
        "customer": customer,
        "zone": zone_of_country(customer.country),
        "unread": unread,
        "methods": [PaymentMethodRead.of(m) for m in methods.methods_of(session, customer.id)],
        "tokens_url": f"{settings.browser_payment_url.rstrip('/')}/v1/tokens",
        "values": {"idempotency_key": uuid.uuid4().hex},
        "errors": errors or FormErrors(),
    }
    return render(request, "portal/payment_methods.html", context, status_code=status_code)


@router.get("/payment-methods")
def methods_page(request: Request, session: DbSession, user: CustomerPage) -> Response:
    return _page(request, session, user)


@router.post("/payment-methods")
def add_card(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: CustomerPage,
) -> Response:
    """Save the token the browser got from the provider (the card never comes here); the
    form's key makes a double click one card."""
    values = values_of(form)
    now = clock.now()
    try:
        body = PaymentMethodCreate(card_token=str(values.get("card_token", "")).strip())
        with SandboxProvider.from_settings(settings) as provider:

            def act() -> dict[str, Any]:
                method = methods.add(
                    session,
                    user=user,
                    card_token=body.card_token,
                    provider=provider,
                    actor=actor_of(user),
                    now=now,
                )
                return PaymentMethodRead.of(method).model_dump(mode="json")

            once_per_form(
                session,
                user_id=user.id,
                values=values,
                operation="payment_method.add",
                request=body.model_dump(),
                now=now,
                act=act,
            )
    except (ValidationError, CaasError) as error:
        status = error.status if isinstance(error, CaasError) else 422
        return _page(
            request,
            session,
            user,
            errors=FormErrors.of(error),
            status_code=status,
        )
    flash(request, "methods.flash.added")
    return see_other(PAGE)


def _command(
    request: Request,
    session: Session,
    user: User,
    *,
    values: FormValues,
    operation: str,
    act: Callable[[], dict[str, Any]],
    done: str,
    now: datetime,
) -> Response:
    """Run a command on one card once per form key, then back to the list with `done` flashed
    (or the refusal's reason; someone else's card stays a 404)."""
    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=operation,
            request={},
            now=now,
            act=act,
        )
    except CaasError as error:
        if error.status == 404:
            raise
        flash(request, "methods.flash.refused", tone="danger", reason=error.message)
    else:
        flash(request, done)
    return see_other(PAGE)


@router.post("/payment-methods/{method_id}/default")
def make_default(
    request: Request,
    method_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    now = clock.now()

    def act() -> dict[str, Any]:
        method = methods.set_default(
            session, user=user, method_id=method_id, actor=actor_of(user), now=now
        )
        return PaymentMethodRead.of(method).model_dump(mode="json")

    return _command(
        request,
        session,
        user,
        values=values_of(form),
        operation=f"payment_method.default:{method_id}",
        act=act,
        done="methods.flash.default",
        now=now,
    )


@router.post("/payment-methods/{method_id}/remove")
def remove_card(
    request: Request,
    method_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: CustomerPage,
) -> Response:
    now = clock.now()

    def act() -> dict[str, Any]:
        method = methods.remove(
            session, user=user, method_id=method_id, actor=actor_of(user), now=now
        )
        return PaymentMethodRead.of(method).model_dump(mode="json")

    return _command(
        request,
        session,
        user,
        values=values_of(form),
        operation=f"payment_method.remove:{method_id}",
        act=act,
        done="methods.flash.removed",
        now=now,
    )
