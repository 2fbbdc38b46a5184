"""Who is calling: a bearer token (phone app, machines) or a web session cookie."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from caas.accounts.models import Role, User
from caas.accounts.service import user_for_token
from caas.core.api import ClockDep, DbSession
from caas.core.errors import Forbidden, NotAuthenticated
from caas.core.history import Actor

bearer = HTTPBearer(auto_error=False, description="An API token from `POST /api/v1/auth/tokens`")


def current_user_or_none(
    request: Request,
    session: DbSession,
    clock: ClockDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User | None:
    if credentials is not None:
        user = user_for_token(session, credentials.credentials, clock.now())
        if user is None:
            raise NotAuthenticated("the API token is invalid or revoked", code="auth.invalid_token")
        return user
    user_id = request.session.get("uid")
    if user_id is None:
        return None
    user = session.get(User, int(user_id))
    if user is None or not user.is_active or request.session.get("epoch") != user.session_epoch:
        request.session.clear()
        return None
    return user


def current_user(user: Annotated[User | None, Depends(current_user_or_none)]) -> User:
    if user is None:
        raise NotAuthenticated("log in first")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require(*roles: Role) -> Callable[[User], User]:
    def dependency(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden(f"this needs the role {' or '.join(r.value for r in roles)}")
        return user

    return dependency


Operator = Annotated[User, Depends(require(Role.OPERATOR))]
Dealer = Annotated[User, Depends(require(Role.DEALER))]
Workshop = Annotated[User, Depends(require(Role.WORKSHOP))]
CustomerUser = Annotated[User, Depends(require(Role.CUSTOMER))]


def actor_of(user: User) -> Actor:
    return Actor(kind=user.role.value, label=user.email, user_id=user.id)
