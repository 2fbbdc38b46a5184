"""Entitlements over time: granting, activating, revoking, ending and switching the rights a car
runs its options by, and reading them back as the windows its configuration is computed from.

An entitlement is a car, a feature, a window (open-ended when `valid_until` is None), a source
and a state (`rules.ENTITLEMENT`). The car's effective configuration at any instant is a pure
function of the ones that count (`rules.counts`: delivering or active, switched on, a window
that is not empty), merged per feature by `caas.ota.rules.feature_states`.

Every function here works in the caller's transaction and leaves a history row (subject
"entitlement"). None of them issues a configuration, except `switch` (a command of its own):
the caller calls `caas.ota.service.request_configuration` once after all its changes. Window
boundaries that pass with nobody calling are re-signed by `caas.store.sweep`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from caas.accounts.models import Role, User
from caas.catalog.models import Feature
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.history import Actor, record
from caas.ota.rules import Entitlement as Window
from caas.ota.rules import plan_entitlements
from caas.sales import service as sales
from caas.sales.models import Customer, Sale
from caas.store.models import Entitlement
from caas.store.rules import (
    COUNTING_STATES,
    ENTITLEMENT,
    EntitlementTerms,
    counting_windows,
    covering_window,
)
from caas.store.sweep import start_sweeping
from caas.vehicles.models import Vehicle

SUBJECT: Final = "entitlement"
SOURCES: Final = frozenset(
    {"plan", "trial", "purchase", "subscription", "permanent", "metered", "occurrence"}
)
# What the owner may switch off and on at will (part 7). A trial is not owned: it is one free
# try of the option for a fixed window that runs on whether the option is on or off, so
# switching it off would only waste it; buying the option makes it switchable.
SWITCHABLE_SOURCES: Final = frozenset(
    {"plan", "purchase", "subscription", "permanent", "metered", "occurrence"}
)


def _record(
    session: Session,
    entitlement: Entitlement,
    event: str,
    *,
    actor: Actor,
    now: datetime,
    from_state: str | None,
    details: dict[str, object] | None = None,
) -> None:
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=entitlement.id,
        customer_id=entitlement.customer_id,
        event=event,
        from_state=from_state,
        to_state=entitlement.state,
        details={
            "vehicle_id": entitlement.vehicle_id,
            "code": entitlement.code,
            "source": entitlement.source,
            "enabled": entitlement.enabled,
            "valid_from": entitlement.valid_from.isoformat(),
            "valid_until": entitlement.valid_until.isoformat() if entitlement.valid_until else None,
            **(details or {}),
        },
    )


def _move(
    session: Session,
    entitlement: Entitlement,
    to_state: str,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, object] | None = None,
) -> None:
    from_state = entitlement.state
    ENTITLEMENT.check(from_state, to_state)
    entitlement.state = to_state
    entitlement.updated_at = now
    _record(
        session,
        entitlement,
        f"entitlement.{to_state}",
        actor=actor,
        now=now,
        from_state=from_state,
        details=details,
    )


def grant(
    session: Session,
    *,
    vehicle: Vehicle,
    feature: Feature,
    source: str,
    valid_from: datetime,
    valid_until: datetime | None,
    state: str = "active",
    customer_id: int | None,
    offer_id: int | None = None,
    purchase_id: int | None = None,
    subscription_id: int | None = None,
    occurrence_id: int | None = None,
    spending_cap_minor: int | None = None,
    actor: Actor,
    now: datetime,
) -> Entitlement:
    """Give the car the right to run `feature` from `valid_from` until `valid_until` (None:
    open-ended). A car has one trial of a feature: a second one is refused (409
    `store.not_eligible.trial_used`)."""
    if source not in SOURCES:
        raise InvalidInput(f"unknown entitlement source {source!r}", field="source")
    if state not in COUNTING_STATES:
        raise InvalidInput("an entitlement starts delivering or active", field="state")
    if feature.platform_id != vehicle.platform_id:
        raise InvalidInput("the option is not one of the car's platform", field="feature")
    if valid_until is not None and valid_until <= valid_from:
        raise InvalidInput("the window ends before it starts", field="valid_until")
    entitlement = Entitlement(
        vehicle_id=vehicle.id,
        feature_id=feature.id,
        code=feature.code,
        source=source,
        state=state,
        enabled=True,
        valid_from=valid_from,
        valid_until=valid_until,
        customer_id=customer_id,
        offer_id=offer_id,
        purchase_id=purchase_id,
        subscription_id=subscription_id,
        occurrence_id=occurrence_id,
        spending_cap_minor=spending_cap_minor,
        parameters={},
        created_at=now,
        updated_at=now,
    )
    if source == "trial":
        try:
            with session.begin_nested():
                session.add(entitlement)
                session.flush()
        except IntegrityError:
            raise Conflict(
                "this car already had its trial of this option",
                code="store.not_eligible.trial_used",
                field="offer_id",
            ) from None
    else:
        session.add(entitlement)
        session.flush()
    _record(session, entitlement, "entitlement.granted", actor=actor, now=now, from_state=None)
    from caas.store.reminders import start_reminding

    start_sweeping(session, now=now)
    start_reminding(session, now=now)  # trials' and renewals' reminders, and renewals
    return entitlement


def grant_plan(
    session: Session, vehicle: Vehicle, sale: Sale, *, actor: Actor, now: datetime
) -> list[Entitlement]:
    """The dealer's plan options from the sale become entitlements: on from now (the
    delivery) for the sale's service period."""
    features = {feature.code: feature for feature in sales.sale_features(session, sale.id)}
    windows = plan_entitlements(
        sorted(features), delivered_at=now, service_period_months=sale.service_period_months
    )
    return [
        grant(
            session,
            vehicle=vehicle,
            feature=features[window.code],
            source="plan",
            valid_from=now,
            valid_until=window.valid_until,
            customer_id=sale.customer_id,
            actor=actor,
            now=now,
        )
        for window in windows
    ]


def activate(session: Session, entitlement: Entitlement, *, actor: Actor, now: datetime) -> None:
    """The car applied it (delivering -> active). A window that is already over by then ends
    at once, so no sweep has to find a boundary it has already passed."""
    _move(session, entitlement, "active", actor=actor, now=now)
    if entitlement.valid_until is not None and entitlement.valid_until <= now:
        _move(session, entitlement, "ended", actor=actor, now=now)


def revoke(
    session: Session, entitlement: Entitlement, *, reason: str, actor: Actor, now: datetime
) -> None:
    """Take the right back (refunded, voided, rejected by the car): it counts no more."""
    _move(session, entitlement, "revoked", actor=actor, now=now, details={"reason": reason})


def end(
    session: Session, entitlement: Entitlement, *, at: datetime, actor: Actor, now: datetime
) -> None:
    """Cut the window at `at` (never lengthens it; before its start the window is empty);
    an active entitlement is ended when `at` is not in the future (a delivering one keeps
    its state: its purchase settles it; a revoked one stays revoked)."""
    cut = max(at, entitlement.valid_from)
    if entitlement.valid_until is None or cut < entitlement.valid_until:
        previous = entitlement.valid_until
        entitlement.valid_until = cut
        entitlement.updated_at = now
        _record(
            session,
            entitlement,
            "entitlement.cut",
            actor=actor,
            now=now,
            from_state=entitlement.state,
            details={"previous_valid_until": previous.isoformat() if previous else None},
        )
    if at <= now and entitlement.state == "active":
        _move(session, entitlement, "ended", actor=actor, now=now)


def _terms(entitlement: Entitlement) -> EntitlementTerms:
    return EntitlementTerms(
        code=entitlement.code,
        source=entitlement.source,
        state=entitlement.state,
        enabled=entitlement.enabled,
        valid_from=entitlement.valid_from,
        valid_until=entitlement.valid_until,
    )


def _counting(
    session: Session, vehicle_id: int, *, feature_id: int | None = None
) -> list[Entitlement]:
    query = select(Entitlement).where(
        Entitlement.vehicle_id == vehicle_id, Entitlement.state.in_(COUNTING_STATES)
    )
    if feature_id is not None:
        query = query.where(Entitlement.feature_id == feature_id)
    return list(session.scalars(query.order_by(Entitlement.valid_from, Entitlement.id)))


def coverage_end(
    session: Session, vehicle_id: int, feature_id: int, *, at: datetime
) -> datetime | None:
    """When the car's counting entitlements of the feature that cover `at` end, touching
    windows chained: a window bought while the option is on starts there (an extension, not a
    duplicate). None when nothing covers `at`; 409 `store.not_eligible.already_permanent` when
    the coverage never ends."""
    windows = [
        (window.valid_from or at, window.valid_until)
        for window in counting_windows(
            _terms(entitlement)
            for entitlement in _counting(session, vehicle_id, feature_id=feature_id)
        )
    ]
    covering = covering_window(windows, at)
    if covering is None:
        return None
    if covering[1] is None:
        raise Conflict(
            "the car has this option with no end already",
            code="store.not_eligible.already_permanent",
        )
    return covering[1]


def car_entitlements(session: Session, vehicle: Vehicle) -> list[Window]:
    """Every window in which the car must run a feature: its entitlements that count."""
    return counting_windows(_terms(entitlement) for entitlement in _counting(session, vehicle.id))


@dataclass(frozen=True)
class OwnedOption:
    """One of the car's options, current or to come, as the owner's pages and API show it."""

    entitlement_id: int
    code: str
    source: str
    state: str
    enabled: bool
    valid_from: datetime
    valid_until: datetime | None
    purchase_id: int | None
    subscription_id: int | None
    # Whether the owner may switch it off and on now (`switch_refusal` is None).
    switchable: bool
    # Pay per use: the owner's monthly spending cap (None: no cap, or not metered).
    spending_cap_minor: int | None = None


def owned_options(session: Session, vehicle: Vehicle, *, at: datetime) -> list[OwnedOption]:
    """The car's counting or future entitlements (switched off ones too), by start then code."""
    query = (
        select(Entitlement)
        .where(
            Entitlement.vehicle_id == vehicle.id,
            Entitlement.state.in_(COUNTING_STATES),
            or_(Entitlement.valid_until.is_(None), Entitlement.valid_until > at),
        )
        .order_by(Entitlement.valid_from, Entitlement.code, Entitlement.id)
    )
    return [option_of(entitlement, at=at) for entitlement in session.scalars(query)]


def option_of(entitlement: Entitlement, *, at: datetime) -> OwnedOption:
    """The entitlement as the owner sees it at `at`."""
    return OwnedOption(
        entitlement_id=entitlement.id,
        code=entitlement.code,
        source=entitlement.source,
        state=entitlement.state,
        enabled=entitlement.enabled,
        valid_from=entitlement.valid_from,
        valid_until=entitlement.valid_until,
        purchase_id=entitlement.purchase_id,
        subscription_id=entitlement.subscription_id,
        switchable=switch_refusal(entitlement, now=at) is None,
        spending_cap_minor=entitlement.spending_cap_minor,
    )


def switch_refusal(entitlement: Entitlement, *, now: datetime) -> Conflict | None:
    """Why the owner cannot switch this entitlement off or on now, or None."""
    if entitlement.state in ("ended", "revoked") or (
        entitlement.valid_until is not None and entitlement.valid_until <= now
    ):
        return Conflict(
            "this option is over: there is nothing to switch",
            code="entitlement.not_switchable.over",
        )
    if entitlement.state == "delivering":
        return Conflict(
            "this option is still on its way to the car; switch it once it is active",
            code="entitlement.not_switchable.delivering",
        )
    if entitlement.source not in SWITCHABLE_SOURCES:
        return Conflict(
            "a trial runs for its whole window; buy the option to switch it at will",
            code="entitlement.not_switchable.trial",
        )
    return None


def owned_vehicle(session: Session, user: User, vin: str) -> Vehicle:
    """The car if `user` is its owner; anyone else gets the same 404 as for no car at all."""
    vehicle = session.scalars(select(Vehicle).where(Vehicle.vin == vin.upper())).first()
    if vehicle is not None and vehicle.owner_customer_id is not None and user.role is Role.CUSTOMER:
        owner = session.scalar(
            select(Customer.user_id).where(Customer.id == vehicle.owner_customer_id)
        )
        if owner == user.id:
            return vehicle
    raise NotFound("no car with this VIN", code="vehicle.not_found")


def switch(
    session: Session, *, user: User, vin: str, entitlement_id: int, enabled: bool, now: datetime
) -> Entitlement:
    """The owner switches one of the car's options off or on, without a charge; the car gets a
    new configuration. Switching to the state it is in changes nothing (a retry is harmless).
    Owner only (404 otherwise); 409 when the option is over, still on its way to the car, or a
    trial (`switch_refusal`)."""
    from caas.ota.service import lock_vehicle, request_configuration

    vehicle = owned_vehicle(session, user, vin)
    lock_vehicle(session, vehicle.id)  # the car first, then what it runs (see lock_vehicle)
    entitlement = session.scalars(
        select(Entitlement)
        .where(Entitlement.id == entitlement_id, Entitlement.vehicle_id == vehicle.id)
        .with_for_update()
    ).first()
    if entitlement is None:
        raise NotFound("the car has no such option", code="entitlement.not_found")
    if entitlement.enabled == enabled:
        return entitlement
    refusal = switch_refusal(entitlement, now=now)
    if refusal is not None:
        raise refusal
    actor = Actor(kind="customer", label=user.email, user_id=user.id)
    entitlement.enabled = enabled
    entitlement.updated_at = now
    _record(
        session,
        entitlement,
        "entitlement.switched_on" if enabled else "entitlement.switched_off",
        actor=actor,
        now=now,
        from_state=entitlement.state,
    )
    request_configuration(
        session,
        vehicle,
        reason="option.switched_on" if enabled else "option.switched_off",
        actor=actor,
        now=now,
    )
    return entitlement
