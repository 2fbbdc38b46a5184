"""Routes for logging in, API tokens and account activation."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from caas.accounts import service
from caas.accounts.deps import CurrentUser
from caas.accounts.models import User
from caas.accounts.schemas import (
    ActivationCreate,
    ActivationResend,
    LoginCreate,
    TokenCreate,
    TokenRead,
    UserRead,
)
from caas.core.api import ClockDep, DbSession, SettingsDep, error_responses
from caas.core.history import Actor

router = APIRouter(prefix="/api/v1", tags=["accounts"])


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post(
    "/auth/login",
    response_model=UserRead,
    summary="Log in with a web session cookie",
    description="Too many failures for the e-mail, or from the caller's address, in the window "
    "answer 429 with `Retry-After` (seconds) until the oldest of them is old enough.",
    responses=error_responses(401, 422, 429),
)
def login(
    body: LoginCreate, request: Request, session: DbSession, clock: ClockDep, settings: SettingsDep
) -> User:
    user = service.authenticate(
        session,
        attempts=request.app.state.sessions,
        email=body.email,
        password=body.password,
        ip=_client_ip(request),
        now=clock.now(),
        settings=settings,
    )
    request.session.clear()
    request.session.update({"uid": user.id, "epoch": user.session_epoch})
    return user


@router.post("/auth/logout", status_code=204, summary="End the web session")
def logout(request: Request) -> Response:
    request.session.clear()
    return Response(status_code=204)


@router.post(
    "/auth/tokens",
    response_model=TokenRead,
    status_code=201,
    summary="Exchange e-mail and password for a bearer token (phone app, machines)",
    description="Limited like `POST /auth/login`: 429 with `Retry-After` after too many failures.",
    responses=error_responses(401, 422, 429),
)
def create_token(
    body: TokenCreate, request: Request, session: DbSession, clock: ClockDep, settings: SettingsDep
) -> TokenRead:
    now = clock.now()
    user = service.authenticate(
        session,
        attempts=request.app.state.sessions,
        email=body.email,
        password=body.password,
        ip=_client_ip(request),
        now=now,
        settings=settings,
    )
    return TokenRead(token=service.issue_api_token(session, user=user, name=body.name, now=now))


@router.get("/me", response_model=UserRead, summary="Who am I", responses=error_responses(401))
def me(user: CurrentUser) -> User:
    return user


@router.post(
    "/auth/activate",
    response_model=UserRead,
    summary="Choose a password with the single-use token from the activation e-mail",
    description="Tokens that match no link count as failures of the caller's address: after "
    "too many in the window the address gets 429 with `Retry-After` for a while.",
    responses=error_responses(422, 429),
)
def activate(
    body: ActivationCreate,
    request: Request,
    session: DbSession,
    clock: ClockDep,
    settings: SettingsDep,
) -> User:
    return service.activate(
        session,
        token=body.token,
        password=body.password,
        now=clock.now(),
        attempts=request.app.state.sessions,
        ip=_client_ip(request),
        settings=settings,
    )


@router.post(
    "/auth/activation-resend",
    status_code=202,
    summary="Send the activation link again (answers 202 whether or not the e-mail is known)",
    responses=error_responses(422),
)
def resend_activation(
    body: ActivationResend, session: DbSession, clock: ClockDep, settings: SettingsDep
) -> dict[str, str]:
    user = session.scalars(
        select(User).where(User.email == service.normalise_email(body.email))
    ).first()
    if user is not None and user.activated_at is None:
        service.send_activation(
            session,
            user=user,
            settings=settings,
            now=clock.now(),
            actor=Actor(kind="customer", label=user.email, user_id=user.id),
        )
    return {"status": "accepted"}
