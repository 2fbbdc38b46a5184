"""The customer's saved cards: adding one (checked with the provider), removing it, and the
default card that pays renewals, scheduled occurrences and the monthly metered charge.

A card is the provider's reusable token and what the provider says of it (brand, last four,
expiry); its number never reaches the platform. The first card becomes the default; removing
the default promotes the newest card left. Whatever was set to be charged to a card that stops
being the default (subscriptions, schedules) follows the new default, with a history row each,
and `charge_token` makes every later charge take the current default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.billing.models import PaymentMethod
from caas.billing.provider import PaymentProvider
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.history import Actor, record
from caas.sales import service as sales
from caas.sales.models import Customer

SUBJECT = "payment_method"


# Reading.


def methods_of(session: Session, customer_id: int) -> list[PaymentMethod]:
    """The customer's cards not removed: the default first, then the newest."""
    return list(
        session.scalars(
            select(PaymentMethod)
            .where(PaymentMethod.customer_id == customer_id, PaymentMethod.removed_at.is_(None))
            .order_by(
                PaymentMethod.is_default.desc(),
                PaymentMethod.created_at.desc(),
                PaymentMethod.id.desc(),
            )
        )
    )


def my_methods(session: Session, *, user: User) -> list[PaymentMethod]:
    """The caller's own cards (see `methods_of`)."""
    return methods_of(session, sales.customer_of_user(session, user).id)


def default_method(session: Session, customer_id: int) -> PaymentMethod | None:
    """The card that pays the customer's renewals, if they keep one."""
    return session.scalars(
        select(PaymentMethod).where(
            PaymentMethod.customer_id == customer_id,
            PaymentMethod.is_default.is_(True),
            PaymentMethod.removed_at.is_(None),
        )
    ).first()


def charge_token(session: Session, *, customer_id: int, stored: str | None) -> str | None:
    """The token a charge made for the customer without them (a renewal, an occurrence, the
    month's metered use) takes now: their default card when they keep one; else the token the
    charge was set up with, unless the customer removed that card (None: no card remains, the
    charge fails like a declined one)."""
    default = default_method(session, customer_id)
    if default is not None:
        return default.token
    if stored is None:
        return None
    removed = session.scalar(
        select(PaymentMethod.id).where(
            PaymentMethod.customer_id == customer_id,
            PaymentMethod.token == stored,
            PaymentMethod.removed_at.is_not(None),
        )
    )
    return None if removed is not None else stored


def charge_tokens(
    session: Session, wanted: Iterable[tuple[int, str | None]]
) -> dict[tuple[int, str | None], str | None]:
    """`charge_token` for many charges at once, each asked as (customer id, the token it was
    set up with) and answered under that pair: two statements whatever their number."""
    asked = set(wanted)
    if not asked:
        return {}
    customers = {customer_id for customer_id, _ in asked}
    defaults: dict[int, str] = {}
    for customer_id, token in session.execute(
        select(PaymentMethod.customer_id, PaymentMethod.token)
        .where(
            PaymentMethod.customer_id.in_(customers),
            PaymentMethod.is_default.is_(True),
            PaymentMethod.removed_at.is_(None),
        )
        .order_by(PaymentMethod.customer_id, PaymentMethod.id)
    ):
        defaults.setdefault(customer_id, token)
    stored = {(customer_id, token) for customer_id, token in asked if token is not None}
    removed: set[tuple[int, str]] = set()
    if stored:
        removed = {
            (customer_id, token)
            for customer_id, token in session.execute(
                select(PaymentMethod.customer_id, PaymentMethod.token).where(
                    PaymentMethod.customer_id.in_({customer_id for customer_id, _ in stored}),
                    PaymentMethod.token.in_({token for _, token in stored}),
                    PaymentMethod.removed_at.is_not(None),
                )
            )
        }
    tokens: dict[tuple[int, str | None], str | None] = {}
    for customer_id, kept in asked:
        if customer_id in defaults:
            tokens[customer_id, kept] = defaults[customer_id]
        elif kept is None or (customer_id, kept) in removed:
            tokens[customer_id, kept] = None
        else:
            tokens[customer_id, kept] = kept
    return tokens


# Changing.


def _lock_customer(session: Session, user: User) -> Customer:
    """The caller's customer row, locked: one change of their cards at a time, so two first
    cards added together do not both become the default."""
    customer = sales.customer_of_user(session, user)
    session.execute(select(Customer.id).where(Customer.id == customer.id).with_for_update())
    return customer


def _owned(session: Session, customer: Customer, method_id: int) -> PaymentMethod:
    method = session.get(PaymentMethod, method_id)
    if method is None or method.customer_id != customer.id or method.removed_at is not None:
        raise NotFound("no such payment method", code="payment_method.not_found")
    return method


def _record(
    session: Session,
    method: PaymentMethod,
    event: str,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, object] | None = None,
) -> None:
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=method.id,
        customer_id=method.customer_id,
        event=event,
        details={"brand": method.brand, "last4": method.last4, **(details or {})},
    )


def _follow(
    session: Session,
    customer_id: int,
    *,
    to: PaymentMethod,
    only_from: Sequence[str] | None,
    actor: Actor,
    now: datetime,
) -> None:
    """Move what the store charges later (subscriptions, schedules) to the card `to`: those
    set to a token in `only_from`, or all of them when it is None."""
    # The store charges through billing; billing asks the store to follow only here.
    from caas.store import schedules, subscriptions

    for follow in (subscriptions.follow_payment_method, schedules.follow_payment_method):
        follow(
            session,
            customer_id=customer_id,
            token=to.token,
            only_from=only_from,
            card=f"{to.brand} •••• {to.last4}",
            actor=actor,
            now=now,
        )


def _make_default(
    session: Session,
    method: PaymentMethod,
    *,
    previous: PaymentMethod | None,
    actor: Actor,
    now: datetime,
) -> None:
    if previous is not None:
        previous.is_default = False
        session.flush()  # the unique index allows one default at a time
    method.is_default = True
    session.flush()
    _record(
        session,
        method,
        f"{SUBJECT}.default_changed",
        actor=actor,
        now=now,
        details={"previous_id": previous.id if previous is not None else None},
    )
    _follow(session, method.customer_id, to=method, only_from=None, actor=actor, now=now)


def add(
    session: Session,
    *,
    user: User,
    card_token: str,
    provider: PaymentProvider,
    actor: Actor,
    now: datetime,
) -> PaymentMethod:
    """Keep a card the customer tokenised at the provider; the provider must know the token.
    The first card (or the first after all were removed) becomes the default. The route runs
    it once per Idempotency-Key; the same token twice is the same card."""
    card = provider.card_token(card_token)
    if card is None:
        raise InvalidInput(
            "the card token is not valid; tokenise the card again",
            field="card_token",
            code="payment_method.invalid_card_token",
        )
    customer = _lock_customer(session, user)
    known = session.scalars(
        select(PaymentMethod).where(
            PaymentMethod.customer_id == customer.id, PaymentMethod.token == card_token
        )
    ).first()
    if known is not None and known.removed_at is None:
        return known
    if known is not None:
        raise Conflict(
            "this card was removed; enter it again to add it",
            code="payment_method.removed",
        )
    previous = default_method(session, customer.id)
    method = PaymentMethod(
        customer_id=customer.id,
        token=card_token,
        brand=card.card.brand,
        last4=card.card.last4,
        exp_month=card.card.exp_month,
        exp_year=card.card.exp_year,
        is_default=False,
        created_at=now,
    )
    session.add(method)
    session.flush()
    _record(session, method, f"{SUBJECT}.added", actor=actor, now=now)
    if previous is None:
        _make_default(session, method, previous=None, actor=actor, now=now)
    return method


def set_default(
    session: Session, *, user: User, method_id: int, actor: Actor, now: datetime
) -> PaymentMethod:
    """Make this card the default: it pays the renewals from now on, and the customer's
    subscriptions and schedules are set to it."""
    customer = _lock_customer(session, user)
    method = _owned(session, customer, method_id)
    if method.is_default:
        return method
    previous = default_method(session, customer.id)
    _make_default(session, method, previous=previous, actor=actor, now=now)
    return method


def remove(
    session: Session, *, user: User, method_id: int, actor: Actor, now: datetime
) -> PaymentMethod:
    """Forget a card (the row stays, marked removed; it is never charged again). A removed
    default hands over to the newest card left, and what was charged to the removed card
    follows it; with no card left, the next renewal fails and is retried as a declined one."""
    customer = _lock_customer(session, user)
    method = _owned(session, customer, method_id)
    was_default = method.is_default
    method.removed_at = now
    method.is_default = False
    session.flush()
    _record(session, method, f"{SUBJECT}.removed", actor=actor, now=now)
    if was_default:
        heir = next(iter(methods_of(session, customer.id)), None)
        if heir is not None:
            _make_default(session, heir, previous=None, actor=actor, now=now)
    else:
        default = default_method(session, customer.id)
        if default is not None:
            _follow(
                session, customer.id, to=default, only_from=[method.token], actor=actor, now=now
            )
    return method
