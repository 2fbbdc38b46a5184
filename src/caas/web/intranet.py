"""The dealer's intranet: the dealership's sales, closing a new sale, and each order."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from caas.accounts.deps import actor_of
from caas.accounts.models import User
from caas.catalog import service as catalog
from caas.catalog.models import Feature, Platform
from caas.core.api import ClockDep, DbSession, SettingsDep
from caas.core.errors import CaasError, NotFound
from caas.core.settings import Settings
from caas.delivery import service as delivery
from caas.delivery.schemas import DeliveryCreate, DeliveryDispatch
from caas.files import service as files
from caas.registration import service as registration
from caas.registration.schemas import CustomerCorrection
from caas.sales import service as sales
from caas.sales.models import Customer, Sale
from caas.sales.read import quote_read
from caas.sales.schemas import CountryCode, QuoteCreate, QuoteRead, SaleCreate
from caas.web.csrf import CSRF_FIELD, csrf_protect
from caas.web.forms import FormErrors, FormValues, PostedForm, once_per_form, values_of
from caas.web.orders import STATES, customer_file_page, order_list, order_view
from caas.web.pages import DealerPage, PageRoute, flash, language_of, render, see_other

router = APIRouter(
    prefix="/intranet",
    route_class=PageRoute,
    include_in_schema=False,
    dependencies=[Depends(csrf_protect)],
)

EMAIL_LANGUAGES = (
    ("es", "Español"),
    ("en", "English"),
    ("fr", "Français"),
    ("de", "Deutsch"),
    ("it", "Italiano"),
    ("pt", "Português"),
)
CUSTOMER_FIELDS = (
    "first_name",
    "last_name",
    "national_id",
    "email",
    "phone",
    "street",
    "postal_code",
    "city",
)
# The holder's data a dealer may correct after the registry refused it.
CORRECTABLE_FIELDS = ("first_name", "last_name", "street", "postal_code", "city")
# Errors some services name without the form's prefix.
_FIELD_ALIASES = {"email": "customer.email", "country": "customer.country"}


@dataclass(frozen=True)
class PlatformChoice:
    platform: Platform
    features: list[Feature]


def _sale_form_context(session: Session) -> dict[str, Any]:
    countries = [catalog.get_country(session, code) for code in get_args(CountryCode)]
    platforms = catalog.list_platforms(session)
    return {
        "countries": [(country.code, country.name) for country in countries],
        "platforms": [
            PlatformChoice(
                platform,
                [f for f in catalog.platform_features(session, platform.id) if f.active],
            )
            for platform in platforms
        ],
        "platform_options": [(platform.code, platform.name) for platform in platforms],
        "email_languages": EMAIL_LANGUAGES,
    }


def _features_field(platform: str) -> str:
    return f"plan.features.{platform}"


def _sale_input(values: FormValues, form: Any) -> dict[str, Any]:
    """The form's fields as the API's `SaleCreate` body (options of the chosen model only)."""
    platform = values.get("plan.platform", "")
    customer: dict[str, Any] = {"country": values.get("customer.country", "")}
    for name in CUSTOMER_FIELDS:
        customer[name] = values.get(f"customer.{name}", "")
    if values.get("customer.language"):
        customer["language"] = values["customer.language"]
    features = [str(code) for code in form.getlist(_features_field(platform))] if platform else []
    return {
        "customer": customer,
        "plan": {
            "platform": platform,
            "features": features,
            "service_period_months": values.get("plan.service_period_months", ""),
            "maintenance_included": values.get("plan.maintenance_included") == "true",
        },
    }


def _render_sale_form(
    request: Request,
    session: Session,
    values: FormValues,
    *,
    errors: FormErrors | None = None,
    quote: QuoteRead | None = None,
    status_code: int = 200,
) -> Response:
    context = _sale_form_context(session)
    context.update(values=values, errors=errors or FormErrors(), quote=quote)
    return render(request, "intranet/sale_new.html", context, status_code=status_code)


@router.get("")
def intranet_home(_: DealerPage) -> Response:
    return see_other("/intranet/sales")


@router.get("/sales")
def sales_page(
    request: Request,
    session: DbSession,
    user: DealerPage,
    search: Annotated[str | None, Query(max_length=100)] = None,
    state: Annotated[str | None, Query(max_length=40)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    orders = order_list(
        session,
        user,
        language=language_of(request, user),
        search=search,
        state=state,
        page=page,
    )
    context = {"orders": orders, "states": STATES, "order_base": "/intranet/sales"}
    return render(request, "intranet/sales.html", context)


@router.get("/sales/new")
def new_sale_page(request: Request, session: DbSession, _: DealerPage) -> Response:
    values: FormValues = {
        "idempotency_key": uuid.uuid4().hex,
        "plan.service_period_months": "48",
        "plan.maintenance_included": "true",
    }
    return _render_sale_form(request, session, values)


@router.post("/sales/new")
def create_sale(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
    user: DealerPage,
) -> Response:
    values = values_of(form)
    for key in form:
        if key.startswith("plan.features."):
            values[key] = [str(code) for code in form.getlist(key)]
    body = _sale_input(values, form)
    if values.get("action") == "quote":
        return _show_quote(
            request, session, values, body, language_of(request, user), at=clock.now()
        )
    now = clock.now()
    try:
        sale_create = SaleCreate.model_validate(body)
        created = once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation="web.sales.create",
            request=sale_create.model_dump(mode="json"),
            now=now,
            act=lambda: _close_sale(session, user, sale_create, settings, now),
        )
    except (ValidationError, CaasError) as error:
        errors = FormErrors.of(error, aliases=_FIELD_ALIASES)
        return _render_sale_form(request, session, values, errors=errors, status_code=422)
    flash(request, "flash.sale_created", number=created["number"])
    return see_other(f"/intranet/sales/{created['id']}")


def _close_sale(
    session: Session, user: User, body: SaleCreate, settings: Settings, now: datetime
) -> dict[str, Any]:
    sale = sales.create_sale(
        session,
        salesperson=user,
        identity=body.customer,
        plan=body.plan,
        settings=settings,
        now=now,
    )
    return {"id": sale.id, "number": sale.number}


def _show_quote(
    request: Request,
    session: Session,
    values: FormValues,
    body: dict[str, Any],
    language: str,
    *,
    at: datetime,
) -> Response:
    """The quote of the plan without closing the sale (the page's button without JavaScript)."""
    try:
        plan = QuoteCreate.model_validate(
            {"country": body["customer"]["country"], "plan": body["plan"]}
        )
        priced = sales.price_plan(session, country_code=plan.country, plan=plan.plan, at=at)
    except (ValidationError, CaasError) as error:
        errors = FormErrors.of(error, aliases={"country": "customer.country"})
        return _render_sale_form(request, session, values, errors=errors, status_code=422)
    return _render_sale_form(request, session, values, quote=quote_read(priced, language))


def _render_sale(
    request: Request,
    session: Session,
    user: User,
    sale_id: int,
    *,
    values: FormValues | None = None,
    errors: FormErrors | None = None,
    status_code: int = 200,
) -> Response:
    sale = sales.get_sale_for(session, user, sale_id)
    view = order_view(session, sale, language_of(request, user))
    errors = errors or FormErrors()
    rejection = view.registration.rejection if view.registration else None
    if rejection is not None and rejection.field and not errors:
        errors.add(rejection.field, rejection.reason)
    context = {
        "order": view,
        "zone": view.zone,
        "can_act": True,
        "file_url": f"/intranet/customers/{sale.customer_id}",
        "values": values or {},
        "errors": errors,
    }
    return render(request, "order.html", context, status_code=status_code)


@router.get("/sales/{sale_id}")
def sale_page(request: Request, sale_id: int, session: DbSession, user: DealerPage) -> Response:
    return _render_sale(request, session, user, sale_id)


def _order_command(
    request: Request,
    session: Session,
    user: User,
    sale_id: int,
    values: FormValues,
    *,
    operation: str,
    now: datetime,
    act: Callable[[Sale], object],
    done: str,
) -> Response:
    """Run one of the dealer's commands on their own (locked) order, once per form key.

    Bad input or a state that does not allow it shows the order again with the message and
    the input kept; the command's writes are rolled back.
    """
    sales.get_sale_for(session, user, sale_id)  # another dealership's order is a 404 page
    request_body = {k: v for k, v in values.items() if k not in (CSRF_FIELD, "idempotency_key")}

    def run() -> dict[str, Any]:
        act(sales.get_sale_for(session, user, sale_id, lock=True))
        return {"sale_id": sale_id}

    try:
        once_per_form(
            session,
            user_id=user.id,
            values=values,
            operation=f"web.{operation}:{sale_id}",
            request=request_body,
            now=now,
            act=run,
        )
    except (ValidationError, CaasError) as error:
        if isinstance(error, NotFound):
            raise
        status = error.status if isinstance(error, CaasError) else 422
        return _render_sale(
            request,
            session,
            user,
            sale_id,
            values=values,
            errors=FormErrors.of(error),
            status_code=status,
        )
    flash(request, done)
    return see_other(f"/intranet/sales/{sale_id}")


@router.post("/sales/{sale_id}/customer")
def correct_customer(
    request: Request,
    sale_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: DealerPage,
) -> Response:
    values = values_of(form)
    now = clock.now()

    def act(sale: Sale) -> object:
        customer = session.get_one(Customer, sale.customer_id)
        changed = {
            name: values[name]
            for name in CORRECTABLE_FIELDS
            if name in values and values[name].strip() != getattr(customer, name)
        }
        correction = CustomerCorrection.model_validate(changed)
        return registration.correct_customer(
            session, sale, correction=correction, actor=actor_of(user), now=now
        )

    return _order_command(
        request,
        session,
        user,
        sale_id,
        values,
        operation="customer.correct",
        now=now,
        act=act,
        done="flash.customer_corrected",
    )


@router.post("/sales/{sale_id}/registration/retry")
def retry_registration(
    request: Request,
    sale_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: DealerPage,
) -> Response:
    now = clock.now()
    return _order_command(
        request,
        session,
        user,
        sale_id,
        values_of(form),
        operation="registration.retry",
        now=now,
        act=lambda sale: registration.retry_registration(
            session, sale, actor=actor_of(user), now=now
        ),
        done="flash.registration_retried",
    )


@router.post("/sales/{sale_id}/delivery")
def schedule_delivery(
    request: Request,
    sale_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: DealerPage,
) -> Response:
    values = values_of(form)
    now = clock.now()

    def act(sale: Sale) -> object:
        body = DeliveryCreate.model_validate(
            {"scheduled_for": values.get("scheduled_for", ""), "carrier": values.get("carrier", "")}
        )
        return delivery.schedule_delivery(
            session,
            sale,
            scheduled_for=body.scheduled_for,
            carrier=body.carrier,
            actor=actor_of(user),
            now=now,
        )

    return _order_command(
        request,
        session,
        user,
        sale_id,
        values,
        operation="delivery.schedule",
        now=now,
        act=act,
        done="flash.delivery_updated",
    )


@router.post("/sales/{sale_id}/delivery/dispatch")
def dispatch_delivery(
    request: Request,
    sale_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: DealerPage,
) -> Response:
    values = values_of(form)
    now = clock.now()

    def act(sale: Sale) -> object:
        body = DeliveryDispatch.model_validate(
            {"tracking_number": values.get("tracking_number", "").strip() or None}
        )
        return delivery.dispatch_delivery(
            session, sale, tracking_number=body.tracking_number, actor=actor_of(user), now=now
        )

    return _order_command(
        request,
        session,
        user,
        sale_id,
        values,
        operation="delivery.dispatch",
        now=now,
        act=act,
        done="flash.delivery_updated",
    )


@router.post("/sales/{sale_id}/delivery/complete")
def complete_delivery(
    request: Request,
    sale_id: int,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    user: DealerPage,
) -> Response:
    now = clock.now()
    return _order_command(
        request,
        session,
        user,
        sale_id,
        values_of(form),
        operation="delivery.complete",
        now=now,
        act=lambda sale: delivery.complete_delivery(session, sale, actor=actor_of(user), now=now),
        done="flash.delivery_updated",
    )


@router.get("/customers/{customer_id}")
def customer_page(
    request: Request, customer_id: int, session: DbSession, clock: ClockDep, user: DealerPage
) -> Response:
    """The part of a customer's file about this dealership's sales (404 for anyone else's)."""
    scope = files.file_for(session, user, customer_id)
    language = language_of(request, user)
    context = customer_file_page(session, scope, language=language, now=clock.now())
    context["order_base"] = "/intranet/sales"
    return render(request, "customer_file.html", context)
