"""The rules of accounts: creating users, activation links, logins, API tokens."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.models import ActivationToken, ApiToken, LoginAttempt, Role, User
from caas.accounts.security import (
    MIN_PASSWORD_LENGTH,
    hash_password,
    new_token,
    token_digest,
    verify_password,
)
from caas.core.db import unit_of_work
from caas.core.errors import (
    Conflict,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    TooManyRequests,
)
from caas.core.history import Actor, record
from caas.core.settings import Settings
from caas.core.throttle import seconds_until_allowed
from caas.notifications.service import queue_email

log = structlog.get_logger(__name__)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(
    session: Session,
    *,
    email: str,
    full_name: str,
    role: Role,
    now: datetime,
    language: str = "en",
    password: str | None = None,
    dealership_id: int | None = None,
) -> User:
    email = normalise_email(email)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(
            "an account with this e-mail already exists", code="account.email_taken", field="email"
        )
    if role is Role.DEALER and dealership_id is None:
        raise InvalidInput("a salesperson belongs to exactly one dealership", field="dealership_id")
    user = User(
        email=email,
        full_name=full_name,
        role=role,
        dealership_id=dealership_id,
        language=language,
        password_hash=hash_password(password) if password else None,
        created_at=now,
        activated_at=now if password else None,
    )
    session.add(user)
    session.flush()
    return user


def send_activation(
    session: Session, *, user: User, settings: Settings, now: datetime, actor: Actor
) -> None:
    """Issue a fresh single-use link (older unused ones stop working) and e-mail it."""
    if user.activated_at is not None:
        raise Conflict("this account is already active", code="account.already_active")
    for old in session.scalars(
        select(ActivationToken).where(
            ActivationToken.user_id == user.id, ActivationToken.used_at.is_(None)
        )
    ):
        old.used_at = now
    token = new_token()
    activation = ActivationToken(
        user_id=user.id,
        token_hash=token_digest(token),
        created_at=now,
        expires_at=now + timedelta(hours=settings.activation_token_hours),
    )
    session.add(activation)
    session.flush()
    queue_email(
        session,
        to=user.email,
        template="activation",
        language=user.language,
        context={
            "name": user.full_name,
            "link": f"{settings.public_url}/activate?token={token}",
            "hours": settings.activation_token_hours,
        },
        dedupe_key=f"activation:{activation.id}",
        now=now,
    )
    record(
        session,
        at=now,
        actor=actor,
        subject_type="user",
        subject_id=user.id,
        customer_id=_customer_id(session, user),
        event="account.activation_sent",
    )


def _customer_id(session: Session, user: User) -> int | None:
    from caas.sales.models import Customer  # the customer's file is the sales domain's

    return session.scalar(select(Customer.id).where(Customer.user_id == user.id))


def activate(
    session: Session,
    *,
    token: str,
    password: str,
    now: datetime,
    attempts: sessionmaker[Session],
    ip: str,
    settings: Settings,
) -> User:
    """Consume the link's token and set the customer's chosen password.

    A token that matches no link is a guess: it is kept as a failed `activation` attempt of
    the address, and an address with too many failures is refused for a while (429).
    """
    check_throttle(session, kind="activation", email=None, ip=ip, now=now, settings=settings)
    activation = session.scalars(
        select(ActivationToken)
        .where(ActivationToken.token_hash == token_digest(token))
        .with_for_update()
    ).first()
    if activation is None:
        record_failure(
            attempts, kind="activation", email="", ip=ip, now=now, reason="no_such_token"
        )
    if activation is None or activation.used_at is not None:
        raise InvalidInput(
            "this activation link is not valid or was already used; ask for a new one",
            field="token",
            code="account.activation_invalid",
        )
    if activation.expires_at <= now:
        raise InvalidInput(
            "this activation link has expired; ask for a new one",
            field="token",
            code="account.activation_expired",
        )
    check_password_strength(password)
    user = session.get_one(User, activation.user_id)
    activation.used_at = now
    user.password_hash = hash_password(password)
    user.activated_at = now
    user.session_epoch += 1
    record(
        session,
        at=now,
        actor=Actor(kind=user.role.value, label=user.email, user_id=user.id),
        subject_type="user",
        subject_id=user.id,
        customer_id=_customer_id(session, user),
        event="account.activated",
    )
    return user


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"the password needs at least {MIN_PASSWORD_LENGTH} characters",
            field="password",
            code="account.password_too_short",
        )


def authenticate(
    session: Session,
    *,
    attempts: sessionmaker[Session],
    email: str,
    password: str,
    ip: str,
    now: datetime,
    settings: Settings,
) -> User:
    """Check a password; too many failures for an e-mail, or from an address, in the window
    refuse every try (the right password too) until the oldest of them leaves the window.

    A failed attempt is written through `attempts` in its own transaction: the request that
    failed rolls back, but the failure must still count towards the limit.
    """
    email = normalise_email(email)
    check_throttle(session, kind="login", email=email, ip=ip, now=now, settings=settings)
    user = session.scalars(select(User).where(User.email == email)).first()
    ok = (
        verify_password(user.password_hash if user else None, password)
        and user is not None
        and user.is_active
    )
    if not ok or user is None:
        reason = (
            "unknown_account"
            if user is None
            else "inactive_account"
            if not user.is_active
            else "wrong_password"
        )
        record_failure(attempts, kind="login", email=email, ip=ip, now=now, reason=reason)
        raise NotAuthenticated("wrong e-mail or password", code="auth.invalid_credentials")
    session.add(LoginAttempt(kind="login", email=email, ip=ip, at=now, succeeded=True))
    return user


# Failures from one address within the window before it is refused: more than an account's
# limit (`Settings.login_max_failures`), as many people may share an address (an office, a
# mobile carrier's gateway), yet few enough that guessing tokens from one place goes nowhere.
MAX_FAILURES_PER_IP = 20


def _retry_after(
    session: Session, *, matching: ColumnElement[bool], limit: int, since: datetime
) -> int | None:
    """Seconds until fewer than `limit` failed tries `matching` are left in the window (None
    while fewer than `limit` are)."""
    return seconds_until_allowed(
        session,
        at=LoginAttempt.at,
        failures=matching & LoginAttempt.succeeded.is_(False),
        limit=limit,
        since=since,
    )


def check_throttle(
    session: Session, *, kind: str, email: str | None, ip: str, now: datetime, settings: Settings
) -> None:
    """Refuse (429, with the seconds to wait) a login or activation try while its account or
    its address has had too many failures in the window; the refusal is logged, not counted."""
    since = now - timedelta(minutes=settings.login_window_minutes)
    waits = [
        _retry_after(
            session,
            matching=LoginAttempt.ip == ip,
            limit=MAX_FAILURES_PER_IP,
            since=since,
        )
    ]
    if email:
        waits.append(
            _retry_after(
                session,
                matching=(LoginAttempt.email == email) & (LoginAttempt.kind == "login"),
                limit=settings.login_max_failures,
                since=since,
            )
        )
    wait = max((seconds for seconds in waits if seconds is not None), default=None)
    if wait is None:
        return
    log.warning("auth.throttled", kind=kind, email=email or None, ip=ip, retry_after=wait)
    raise TooManyRequests(
        f"too many failed attempts; try again in {math.ceil(wait / 60)} minutes",
        code="auth.rate_limited",
        retry_after_seconds=wait,
    )


def record_failure(
    attempts: sessionmaker[Session], *, kind: str, email: str, ip: str, now: datetime, reason: str
) -> None:
    """Keep a failed try (in its own transaction, so the caller's rollback keeps it) and log it:
    which account and address, never the password or token that was tried."""
    with unit_of_work(attempts) as own:
        own.add(LoginAttempt(kind=kind, email=email, ip=ip, at=now, succeeded=False))
    log.warning(f"auth.{kind}_failed", email=email or None, ip=ip, reason=reason)


def issue_api_token(session: Session, *, user: User, name: str, now: datetime) -> str:
    token = new_token()
    session.add(
        ApiToken(user_id=user.id, token_hash=token_digest(token), name=name, created_at=now)
    )
    return token


def user_for_token(session: Session, token: str, now: datetime) -> User | None:
    api_token = session.scalars(
        select(ApiToken).where(
            ApiToken.token_hash == token_digest(token), ApiToken.revoked_at.is_(None)
        )
    ).first()
    if api_token is None:
        return None
    api_token.last_used_at = now
    user = session.get(User, api_token.user_id)
    return user if user is not None and user.is_active else None


def revoke_api_token(session: Session, *, token: str, now: datetime) -> None:
    api_token = session.scalars(
        select(ApiToken).where(ApiToken.token_hash == token_digest(token))
    ).first()
    if api_token is None:
        raise NotFound("no such token")
    api_token.revoked_at = now


def follow_customer(user: User, *, full_name: str, language: str) -> None:
    """The login's name and language after the customer corrected theirs."""
    user.full_name = full_name
    user.language = language


def erase_login(session: Session, *, user: User) -> None:
    """The account erased at its owner's request: no password, no tokens, no e-mail (a
    placeholder keeps the column unique), inactive; every web session is refused at once."""
    session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    session.execute(delete(ActivationToken).where(ActivationToken.user_id == user.id))
    session.execute(delete(LoginAttempt).where(LoginAttempt.email == user.email))
    user.email = f"erased-{user.id}@erased.invalid"
    user.full_name = "Erased customer"
    user.password_hash = None
    user.is_active = False
    user.session_epoch += 1
