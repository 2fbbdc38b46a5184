"""Pages to log in and out, activate an account, and choose the page language."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select

from caas.accounts import service as accounts
from caas.accounts.models import User
from caas.core.api import ClockDep, DbSession, SettingsDep, with_retry_after
from caas.core.errors import InvalidInput, NotAuthenticated, TooManyRequests
from caas.core.history import Actor, record
from caas.sales.models import Customer
from caas.web.csrf import csrf_protect, renew_csrf_token
from caas.web.forms import FormErrors, PostedForm, values_of
from caas.web.pages import (
    HOME,
    PageRoute,
    SignedIn,
    Viewer,
    flash,
    render,
    safe_next,
    see_other,
)
from caas.web.strings import LANGUAGES

router = APIRouter(
    route_class=PageRoute, include_in_schema=False, dependencies=[Depends(csrf_protect)]
)


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _start_session(request: Request, user: User) -> None:
    language = request.session.get("lang")
    request.session.clear()
    request.session.update({"uid": user.id, "epoch": user.session_epoch})
    if language:
        request.session["lang"] = language
    renew_csrf_token(request)
    request.state.user = user


@router.get("/")
def home(user: Viewer) -> Response:
    return see_other(HOME[user.role] if user else "/login")


@router.get("/login")
def login_page(
    request: Request,
    user: Viewer,
    next_url: Annotated[str | None, Query(alias="next", max_length=500)] = None,
) -> Response:
    if user is not None:
        return see_other(safe_next(next_url) or HOME[user.role])
    return render(request, "login.html", {"values": {"next": safe_next(next_url) or ""}})


@router.post("/login")
def login(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
) -> Response:
    values = values_of(form)
    try:
        user = accounts.authenticate(
            session,
            attempts=request.app.state.sessions,
            email=values.get("email", ""),
            password=values.get("password", ""),
            ip=_client_ip(request),
            now=clock.now(),
            settings=settings,
        )
    except (NotAuthenticated, TooManyRequests) as error:
        values.pop("password", None)
        status = 429 if isinstance(error, TooManyRequests) else 401
        page = render(
            request,
            "login.html",
            {
                "values": values,
                "errors": FormErrors.of(error),
                "rate_limited": status == 429,
            },
            status_code=status,
        )
        return with_retry_after(page, error)
    _start_session(request, user)
    return see_other(safe_next(values.get("next")) or HOME[user.role])


def _end_session(request: Request) -> None:
    language = request.session.get("lang")
    request.session.clear()
    if language:
        request.session["lang"] = language
    renew_csrf_token(request)


@router.post("/logout")
def logout(request: Request) -> Response:
    _end_session(request)
    flash(request, "flash.logged_out")
    return see_other("/login")


@router.post("/logout/everywhere")
def logout_everywhere(
    request: Request, user: SignedIn, session: DbSession, clock: ClockDep
) -> Response:
    """Ends every session of the user, in this browser and all others: each session cookie
    carries the user's session epoch, which moves on here, so the others are refused at their
    next request."""
    user.session_epoch += 1
    record(
        session,
        at=clock.now(),
        actor=Actor(kind=user.role.value, label=user.email, user_id=user.id),
        subject_type="user",
        subject_id=user.id,
        customer_id=session.scalar(select(Customer.id).where(Customer.user_id == user.id)),
        event="account.logged_out_everywhere",
    )
    _end_session(request)
    flash(request, "flash.logged_out_everywhere")
    return see_other("/login")


@router.get("/activate")
def activation_page(
    request: Request, token: Annotated[str, Query(max_length=200)] = ""
) -> Response:
    errors = FormErrors()
    if not token:
        errors.add("token", "this activation link is not valid; ask for a new one")
    return render(request, "activate.html", {"values": {"token": token}, "errors": errors})


@router.post("/activate")
def activate(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
) -> Response:
    values = values_of(form)
    password, repeated = values.pop("password", ""), values.pop("password_again", "")
    try:
        if password != repeated:
            raise InvalidInput("the two passwords are not the same", field="password_again")
        with session.begin_nested():
            user = accounts.activate(
                session,
                token=values.get("token", ""),
                password=password,
                now=clock.now(),
                attempts=request.app.state.sessions,
                ip=_client_ip(request),
                settings=settings,
            )
    except (InvalidInput, TooManyRequests) as error:
        page = render(
            request,
            "activate.html",
            {"values": values, "errors": FormErrors.of(error)},
            status_code=error.status,
        )
        return with_retry_after(page, error)
    _start_session(request, user)
    flash(request, "flash.activated")
    return see_other(HOME[user.role])


@router.get("/activate/resend")
def resend_page(request: Request) -> Response:
    return render(request, "activate_resend.html")


@router.post("/activate/resend")
def resend(
    request: Request,
    form: PostedForm,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
) -> Response:
    email = values_of(form).get("email", "")
    # The same answer whether or not the e-mail is known, as in the API.
    query = select(User).where(User.email == accounts.normalise_email(email))
    user = session.scalars(query).first()
    if user is not None and user.activated_at is None:
        accounts.send_activation(
            session,
            user=user,
            settings=settings,
            now=clock.now(),
            actor=Actor(kind="customer", label=user.email, user_id=user.id),
        )
    flash(request, "flash.activation_resent")
    return see_other("/login")


@router.post("/language")
def choose_language(request: Request, form: PostedForm) -> Response:
    values = values_of(form)
    if values.get("lang") in LANGUAGES:
        request.session["lang"] = values["lang"]
    return see_other(safe_next(values.get("next")) or "/")
