"""Change of owner and end of life: every state change of a car passing to another customer,
or leaving the road for good.

A change of owner is a `Transfer`: a private one is opened by the owner, who gets a one-time
code to give the buyer (only its keyed hash is kept; it expires after `rules.CODE_VALIDITY`,
and wrong codes are limited like logins); the buyer types the VIN and the code, logged in, or
as a new person whose account is made then (activated by e-mail). A dealer-mediated one is
recorded by the dealership with both parties present (the seller's national id as proof).

Completing it, in one transaction: what belongs to the person leaves with them
(`caas.store.handover`: subscriptions, schedules, trials and windows end, with the refund
their offers define, queued here as jobs), what belongs to the car stays (permanent options
and the plan pass to the buyer), the seller's phones are revoked, the car's owner becomes the
buyer and a new manifest is signed (carrying none of the seller's keys or names); both are
told, and the registry records the new holder by a job retried while it is down.

Scrapping closes the car's record: the registry deregisters it (a job), its rights are
revoked, its broker account removed, nothing more is published to it (its retained manifest
is cleared), the twin is archived with its whole history, and the owner told.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import structlog
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts import service as accounts
from caas.accounts.models import Role, User
from caas.core.db import unit_of_work
from caas.core.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from caas.core.history import Actor, HistoryEntry, record
from caas.core.outbox import enqueue
from caas.core.settings import Settings
from caas.core.throttle import seconds_until_allowed
from caas.iot.service import revoke_car_credentials
from caas.notifications.service import notify_user
from caas.ota import service as ota
from caas.ownership import rules
from caas.ownership.models import Scrapping, Transfer, TransferCodeAttempt
from caas.sales import service as sales
from caas.sales.models import Customer, Sale
from caas.sales.schemas import CustomerIdentity
from caas.store import handover
from caas.vehicles import keys
from caas.vehicles import service as vehicles
from caas.vehicles.models import Vehicle

log = structlog.get_logger(__name__)

SUBJECT: Final = "vehicle"
REGISTRY_TOPIC: Final = "ownership.registry"
REFUND_TOPIC: Final = "ownership.refund"


@dataclass(frozen=True)
class OpenedTransfer:
    """A private transfer just opened, with its code: shown once, never stored."""

    transfer: Transfer
    code: str


def _not_found() -> NotFound:
    return NotFound("no car with this VIN", code="vehicle.not_found")


def _owned_car(session: Session, user: User, vin: str) -> tuple[Vehicle, Customer]:
    """The car, locked, when `user` is its owner; anyone else gets the same 404."""
    if user.role is not Role.CUSTOMER:
        raise _not_found()
    customer = sales.customer_of_user(session, user)
    vehicle = session.scalars(
        select(Vehicle).where(Vehicle.vin == vin.upper()).with_for_update()
    ).first()
    if vehicle is None or vehicle.owner_customer_id != customer.id:
        raise _not_found()
    return vehicle, customer


def _check_transferable(vehicle: Vehicle) -> None:
    if vehicle.state == "archived":
        raise Conflict("this car was scrapped", code="vehicle.archived")
    if vehicle.delivered_at is None:
        raise Conflict(
            "a car changes hands once it has been delivered", code="transfer.not_delivered"
        )


def open_transfer_of(session: Session, vehicle_id: int, *, lock: bool = False) -> Transfer | None:
    query = select(Transfer).where(Transfer.vehicle_id == vehicle_id, Transfer.state == "open")
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def record_event(
    session: Session,
    vehicle: Vehicle,
    event: str,
    *,
    customer_id: int | None,
    actor: Actor,
    now: datetime,
    from_state: str | None = None,
    to_state: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    record(
        session,
        at=now,
        actor=actor,
        subject_type=SUBJECT,
        subject_id=vehicle.id,
        customer_id=customer_id,
        event=event,
        from_state=from_state,
        to_state=to_state,
        details={"vin": vehicle.vin, **(details or {})},
    )


def _move(
    session: Session,
    transfer: Transfer,
    vehicle: Vehicle,
    to_state: str,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    from_state = transfer.state
    rules.TRANSFER.check(from_state, to_state)
    transfer.state = to_state
    record_event(
        session,
        vehicle,
        f"ownership.transfer_{to_state}",
        customer_id=transfer.seller_customer_id,
        actor=actor,
        now=now,
        from_state=from_state,
        to_state=to_state,
        details={"transfer_id": transfer.id, "kind": transfer.kind, **(details or {})},
    )


# --- a private sale: the seller's side ---------------------------------------------------------


def open_transfer(
    session: Session, *, user: User, vin: str, settings: Settings, actor: Actor, now: datetime
) -> OpenedTransfer:
    """The owner sells the car: a transfer with a fresh code for the buyer (409 while another
    is open: cancel it first)."""
    vehicle, seller = _owned_car(session, user, vin)
    _check_transferable(vehicle)
    if open_transfer_of(session, vehicle.id) is not None:
        raise Conflict(
            "this car has a transfer open already: cancel it for a new code",
            code="transfer.already_open",
        )
    code = rules.new_code()
    expires_at = now + rules.CODE_VALIDITY
    transfer = Transfer(
        vehicle_id=vehicle.id,
        kind="private",
        state="open",
        seller_customer_id=seller.id,
        created_by_user_id=user.id,
        code_hash=rules.code_hash(settings.secret_key, vehicle.vin, code),
        code_expires_at=expires_at,
        created_at=now,
        registry_state="none",
    )
    session.add(transfer)
    session.flush()
    record_event(
        session,
        vehicle,
        "ownership.transfer_opened",
        customer_id=seller.id,
        actor=actor,
        now=now,
        to_state="open",
        details={"transfer_id": transfer.id, "expires_at": expires_at.isoformat()},
    )
    return OpenedTransfer(transfer, code)


def cancel_transfer(
    session: Session, *, user: User, vin: str, actor: Actor, now: datetime
) -> Transfer:
    """The seller changes their mind: the code stops working (404 with none open)."""
    vehicle, _ = _owned_car(session, user, vin)
    transfer = open_transfer_of(session, vehicle.id, lock=True)
    if transfer is None:
        raise NotFound("this car has no open transfer", code="transfer.not_found")
    transfer.cancelled_at = now
    _move(session, transfer, vehicle, "cancelled", actor=actor, now=now)
    return transfer


def seller_transfer(session: Session, *, user: User, vin: str) -> tuple[Vehicle, Transfer | None]:
    """The owner's car and its open transfer, if any (404 for a car not theirs)."""
    if user.role is not Role.CUSTOMER:
        raise _not_found()
    customer = sales.customer_of_user(session, user)
    vehicle = vehicles.find_vehicle_by_vin(session, vin)
    if vehicle is None or vehicle.owner_customer_id != customer.id:
        raise _not_found()
    return vehicle, open_transfer_of(session, vehicle.id)


# --- a private sale: the buyer's side ----------------------------------------------------------


def _seconds_until_allowed(
    session: Session, *, matching: ColumnElement[bool], since: datetime
) -> int | None:
    """Seconds until fewer than `rules.MAX_FAILED_CODES` wrong codes `matching` are left in the
    window (None while fewer are)."""
    return seconds_until_allowed(
        session,
        at=TransferCodeAttempt.at,
        failures=matching & TransferCodeAttempt.succeeded.is_(False),
        limit=rules.MAX_FAILED_CODES,
        since=since,
    )


def _check_attempts(session: Session, *, user_id: int | None, vin: str, now: datetime) -> None:
    """Too many wrong codes lately for this buyer or this car: 429, with the seconds to wait,
    until the oldest of them leaves the window (the refusal is logged, not counted)."""
    since = now - rules.FAILED_CODES_WINDOW
    waits = [_seconds_until_allowed(session, matching=TransferCodeAttempt.vin == vin, since=since)]
    if user_id is not None:
        waits.append(
            _seconds_until_allowed(
                session, matching=TransferCodeAttempt.user_id == user_id, since=since
            )
        )
    wait = max((seconds for seconds in waits if seconds is not None), default=None)
    if wait is None:
        return
    log.warning("transfer.throttled", vin=vin, user_id=user_id, retry_after=wait)
    raise TooManyRequests(
        f"too many wrong codes; try again in {math.ceil(wait / 60)} minutes",
        code="transfer.rate_limited",
        retry_after_seconds=wait,
    )


def _count_wrong_code(
    attempts: sessionmaker[Session], *, user_id: int | None, vin: str, now: datetime, reason: str
) -> None:
    """Keep a wrong code (in its own transaction, so the caller's rollback keeps it) and log
    it: which car and buyer, never the code that was tried."""
    with unit_of_work(attempts) as own:
        own.add(TransferCodeAttempt(user_id=user_id, vin=vin, at=now, succeeded=False))
    log.warning("transfer.code_failed", vin=vin, user_id=user_id, reason=reason)


def _checked_transfer(
    session: Session,
    *,
    vin: str,
    code: str,
    user_id: int | None,
    attempts: sessionmaker[Session],
    settings: Settings,
    now: datetime,
) -> tuple[Transfer, Vehicle]:
    """The open transfer this VIN and code unlock, locked with its car. A wrong or expired
    code is 422 (field `code`), and counts towards the limit even though the request rolls
    back: it is written through `attempts` in its own transaction."""
    vin = vin.strip().upper()
    _check_attempts(session, user_id=user_id, vin=vin, now=now)
    vehicle = session.scalars(select(Vehicle).where(Vehicle.vin == vin).with_for_update()).first()
    transfer = open_transfer_of(session, vehicle.id, lock=True) if vehicle else None
    matches = transfer is not None and rules.code_matches(
        settings.secret_key, vin, code, transfer.code_hash
    )
    if not matches or transfer is None or vehicle is None:
        reason = "wrong_code" if transfer is not None else "no_open_transfer"
        _count_wrong_code(attempts, user_id=user_id, vin=vin, now=now, reason=reason)
        raise InvalidInput(
            "this code does not transfer this car", field="code", code="transfer.code_invalid"
        )
    if transfer.code_expires_at is None or now >= transfer.code_expires_at:
        _count_wrong_code(attempts, user_id=user_id, vin=vin, now=now, reason="expired_code")
        raise InvalidInput(
            "this code has expired: ask the seller for a new one",
            field="code",
            code="transfer.code_expired",
        )
    session.add(TransferCodeAttempt(user_id=user_id, vin=vin, at=now, succeeded=True))
    return transfer, vehicle


def receive_car(
    session: Session,
    *,
    user: User,
    vin: str,
    code: str,
    attempts: sessionmaker[Session],
    settings: Settings,
    actor: Actor,
    now: datetime,
) -> Transfer:
    """A customer with an account receives the car with its VIN and code."""
    if user.role is not Role.CUSTOMER:
        raise Conflict("only a customer can own a car", code="transfer.not_a_customer")
    buyer = sales.customer_of_user(session, user)
    transfer, vehicle = _checked_transfer(
        session,
        vin=vin,
        code=code,
        user_id=user.id,
        attempts=attempts,
        settings=settings,
        now=now,
    )
    if transfer.seller_customer_id == buyer.id:
        raise Conflict("the car is yours already", code="transfer.same_owner")
    complete(session, transfer, vehicle, buyer, actor=actor, now=now)
    return transfer


def receive_car_as_new_customer(
    session: Session,
    *,
    vin: str,
    code: str,
    identity: CustomerIdentity,
    attempts: sessionmaker[Session],
    settings: Settings,
    now: datetime,
) -> tuple[Transfer, Customer]:
    """A person without an account receives the car: their customer file and account are
    made, and the activation link e-mailed. Someone who has an account logs in instead
    (409), so nobody is given a car without their own confirmation."""
    transfer, vehicle = _checked_transfer(
        session, vin=vin, code=code, user_id=None, attempts=attempts, settings=settings, now=now
    )
    taken = session.scalar(
        select(func.count(Customer.id)).where(
            (Customer.email == identity.email.strip().lower())
            | (
                (Customer.country == identity.country)
                & (Customer.national_id == identity.national_id)
            )
        )
    )
    if taken or session.scalar(
        select(func.count(User.id)).where(User.email == accounts.normalise_email(identity.email))
    ):
        raise Conflict(
            "you have an account already: log in to receive the car",
            code="transfer.log_in",
            field="email",
        )
    buyer, _ = sales.find_or_create_customer(session, identity=identity, now=now)
    user = session.get_one(User, buyer.user_id)
    actor = Actor(kind="customer", label=user.email, user_id=user.id)
    accounts.send_activation(session, user=user, settings=settings, now=now, actor=actor)
    complete(session, transfer, vehicle, buyer, actor=actor, now=now)
    return transfer, buyer


# --- a resale at a dealership ------------------------------------------------------------------


def record_resale(
    session: Session,
    *,
    dealer: User,
    vin: str,
    seller_national_id: str,
    identity: CustomerIdentity,
    settings: Settings,
    now: datetime,
) -> Transfer:
    """A dealership records the resale between the owner and a buyer, both present: the
    seller's national id (from their document) must be the owner's (404 otherwise, as for a
    car that does not exist); the buyer is found or created as in the new-sale form."""
    if dealer.role is not Role.DEALER or dealer.dealership_id is None:
        raise Conflict("this salesperson has no dealership", code="sale.no_dealership")
    vehicle = session.scalars(
        select(Vehicle).where(Vehicle.vin == vin.strip().upper()).with_for_update()
    ).first()
    seller = (
        session.get(Customer, vehicle.owner_customer_id)
        if vehicle is not None and vehicle.owner_customer_id is not None
        else None
    )
    typed = "".join(seller_national_id.upper().split())
    if vehicle is None or seller is None or seller.national_id.upper() != typed:
        raise _not_found()
    _check_transferable(vehicle)
    actor = Actor(kind="dealer", label=dealer.email, user_id=dealer.id)
    buyer, is_new = sales.find_or_create_customer(session, identity=identity, now=now)
    if buyer.id == seller.id:
        raise Conflict("the buyer owns the car already", code="transfer.same_owner")
    pending = open_transfer_of(session, vehicle.id, lock=True)
    if pending is not None:
        pending.cancelled_at = now
        _move(session, pending, vehicle, "cancelled", actor=actor, now=now)
    transfer = Transfer(
        vehicle_id=vehicle.id,
        kind="dealer",
        state="open",
        seller_customer_id=seller.id,
        dealership_id=dealer.dealership_id,
        created_by_user_id=dealer.id,
        created_at=now,
        registry_state="none",
    )
    session.add(transfer)
    session.flush()
    user = session.get_one(User, buyer.user_id)
    if is_new or user.activated_at is None:
        accounts.send_activation(session, user=user, settings=settings, now=now, actor=actor)
    complete(session, transfer, vehicle, buyer, actor=actor, now=now)
    return transfer


# --- completing ---------------------------------------------------------------------------------


def complete(
    session: Session,
    transfer: Transfer,
    vehicle: Vehicle,
    buyer: Customer,
    *,
    actor: Actor,
    now: datetime,
) -> None:
    """The car is the buyer's: see the module's docstring for everything that happens."""
    _check_transferable(vehicle)
    seller = session.get_one(Customer, transfer.seller_customer_id)
    transfer.buyer_customer_id = buyer.id
    transfer.completed_at = now
    _move(session, transfer, vehicle, "completed", actor=actor, now=now)
    released = handover.hand_over(
        session, vehicle, previous_owner_id=seller.id, new_owner_id=buyer.id, actor=actor, now=now
    )
    phones = keys.revoke_every_phone(session, vehicle, reason="car_sold", actor=actor, now=now)
    vehicles.change_owner(session, vehicle, new_owner_id=buyer.id, actor=actor, now=now)
    ota.request_configuration(
        session, vehicle, reason="ownership.transferred", actor=actor, now=now
    )
    for refund in released.refunds:
        _queue_refund(session, refund, now=now)
    if vehicle.registered_country is not None and vehicle.plate is not None:
        transfer.registry_state = "pending"
        enqueue(
            session,
            topic=REGISTRY_TOPIC,
            payload={"transfer_id": transfer.id},
            dedupe_key=f"{REGISTRY_TOPIC}:transfer:{transfer.id}",
            now=now,
        )
    _tell(
        session,
        seller,
        "ownership.car_sold",
        {
            "vin": vehicle.vin,
            "ended": released.ended,
            "refunds": [
                {"amount_minor": r.amount_minor, "currency": r.currency} for r in released.refunds
            ],
            "phones": len(phones),
        },
        dedupe_key=f"ownership.car_sold:{transfer.id}",
        now=now,
    )
    _tell(
        session,
        buyer,
        "ownership.car_received",
        {"vin": vehicle.vin, "plate": vehicle.plate or "", "kept": released.kept},
        dedupe_key=f"ownership.car_received:{transfer.id}",
        now=now,
    )


def _queue_refund(session: Session, refund: handover.Refund, *, now: datetime) -> None:
    enqueue(
        session,
        topic=REFUND_TOPIC,
        payload={
            "payment_id": refund.payment_id,
            "amount_minor": refund.amount_minor,
            "entitlement_id": refund.entitlement_id,
        },
        dedupe_key=f"{REFUND_TOPIC}:{refund.entitlement_id}",
        now=now,
    )


def _tell(
    session: Session,
    customer: Customer,
    kind: str,
    context: dict[str, Any],
    *,
    dedupe_key: str,
    now: datetime,
) -> None:
    notify_user(
        session,
        user_id=customer.user_id,
        email=customer.email,
        language=customer.language,
        kind=kind,
        context={"name": customer.first_name, "country": customer.country, **context},
        dedupe_key=dedupe_key,
        now=now,
    )


# --- end of life --------------------------------------------------------------------------------


def _scrappable(session: Session, user: User, vin: str) -> Vehicle:
    """The car, locked, for an operator; for a dealer only a car their dealership sold; 404
    for anyone else."""
    vehicle = session.scalars(
        select(Vehicle).where(Vehicle.vin == vin.strip().upper()).with_for_update()
    ).first()
    if vehicle is None or user.role not in (Role.OPERATOR, Role.DEALER):
        raise _not_found()
    if user.role is Role.DEALER:
        dealership = (
            session.scalar(select(Sale.dealership_id).where(Sale.id == vehicle.sale_id))
            if vehicle.sale_id is not None
            else None
        )
        if dealership is None or dealership != user.dealership_id:
            raise _not_found()
    return vehicle


def dealer_car(session: Session, user: User, vin: str) -> Vehicle:
    """A car the dealer's dealership sold (an operator: any car); 404 for anyone else."""
    return _scrappable(session, user, vin)


def scrap(
    session: Session,
    *,
    user: User,
    vin: str,
    reason: str,
    certificate_number: str,
    actor: Actor,
    now: datetime,
) -> Scrapping:
    """The car's end of life (see the module's docstring); 409 when it was scrapped already."""
    reason, certificate_number = reason.strip(), certificate_number.strip()
    if not reason:
        raise InvalidInput("say why the car is scrapped", field="reason")
    if not certificate_number:
        raise InvalidInput("the certificate of destruction's number", field="certificate_number")
    vehicle = _scrappable(session, user, vin)
    if vehicle.state == "archived":
        raise Conflict("this car was scrapped already", code="vehicle.archived")
    owner = (
        session.get(Customer, vehicle.owner_customer_id)
        if vehicle.owner_customer_id is not None
        else None
    )
    pending = open_transfer_of(session, vehicle.id, lock=True)
    if pending is not None:
        pending.cancelled_at = now
        _move(session, pending, vehicle, "cancelled", actor=actor, now=now)
    released = handover.retire(session, vehicle, actor=actor, now=now)
    keys.revoke_every_phone(session, vehicle, reason="car_scrapped", actor=actor, now=now)
    ota.retire(session, vehicle, actor=actor, now=now)
    revoke_car_credentials(session, vin=vehicle.vin, actor=actor, now=now)
    vehicles.archive(session, vehicle, reason=reason, actor=actor, now=now)
    scrapping = Scrapping(
        vehicle_id=vehicle.id,
        reason=reason,
        certificate_number=certificate_number,
        owner_customer_id=vehicle.owner_customer_id,
        scrapped_by_user_id=user.id,
        scrapped_at=now,
        registry_state="none",
    )
    session.add(scrapping)
    session.flush()
    for refund in released.refunds:
        _queue_refund(session, refund, now=now)
    if vehicle.registered_country is not None and vehicle.plate is not None:
        scrapping.registry_state = "pending"
        enqueue(
            session,
            topic=REGISTRY_TOPIC,
            payload={"scrapping_id": scrapping.id},
            dedupe_key=f"{REGISTRY_TOPIC}:scrapping:{scrapping.id}",
            now=now,
        )
    if owner is not None:
        _tell(
            session,
            owner,
            "ownership.car_scrapped",
            {
                "vin": vehicle.vin,
                "plate": vehicle.plate or "",
                "certificate_number": certificate_number,
                "ended": released.ended,
            },
            dedupe_key=f"ownership.car_scrapped:{scrapping.id}",
            now=now,
        )
    return scrapping


def scrapping_of(session: Session, vehicle_id: int) -> Scrapping | None:
    return session.scalars(select(Scrapping).where(Scrapping.vehicle_id == vehicle_id)).first()


# --- the registry's refusals --------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryRefusal:
    """The registry's refusal of a car's change of holder or deregistration, to retry."""

    row: Transfer | Scrapping
    kind: str  # holder_change | deregistration
    reason: str
    at: datetime | None


def _requested_at(row: Transfer | Scrapping) -> datetime:
    if isinstance(row, Scrapping):
        return row.scrapped_at
    return row.completed_at or row.created_at


def refused_registry(session: Session, vehicle: Vehicle) -> RegistryRefusal | None:
    """The car's newest registry request the registry refused (None when none is refused)."""
    found: list[Transfer | Scrapping] = [
        *session.scalars(
            select(Transfer).where(
                Transfer.vehicle_id == vehicle.id, Transfer.registry_state == "refused"
            )
        ),
        *session.scalars(
            select(Scrapping).where(
                Scrapping.vehicle_id == vehicle.id, Scrapping.registry_state == "refused"
            )
        ),
    ]
    if not found:
        return None
    row = max(found, key=_requested_at)
    kind = "holder_change" if isinstance(row, Transfer) else "deregistration"
    entry = session.scalars(
        select(HistoryEntry)
        .where(
            HistoryEntry.subject_type == SUBJECT,
            HistoryEntry.subject_id == vehicle.id,
            HistoryEntry.event == f"ownership.registry_{kind}_refused",
        )
        .order_by(HistoryEntry.id.desc())
        .limit(1)
    ).first()
    reason = str(entry.details.get("reason", "")) if entry is not None else ""
    at = entry.at if entry is not None else None
    return RegistryRefusal(row, kind, reason, at)


def registry_refused(
    session: Session, vehicle: Vehicle, row: Transfer | Scrapping, *, reason: str, now: datetime
) -> None:
    """The people who can act on a refusal are told (in the app, and by e-mail): every operator,
    and the dealer who presented it (a dealer's resale or scrapping)."""
    presenter_id = row.created_by_user_id if isinstance(row, Transfer) else row.scrapped_by_user_id
    kind = "holder_change" if isinstance(row, Transfer) else "deregistration"
    people = list(
        session.scalars(
            select(User)
            .where(
                (User.role == Role.OPERATOR)
                | ((User.id == presenter_id) & (User.role == Role.DEALER))
            )
            .order_by(User.id)
        )
    )
    for person in people:
        link = (
            f"/operator/fleet/{vehicle.vin}"
            if person.role is Role.OPERATOR
            else f"/intranet/cars/{vehicle.vin}"
        )
        notify_user(
            session,
            user_id=person.id,
            email=person.email,
            language=person.language,
            kind="ownership.registry_refused",
            context={
                "name": person.full_name,
                "vin": vehicle.vin,
                "plate": vehicle.plate or "",
                "request": kind,
                "reason": reason,
                "link": link,
            },
            dedupe_key=f"ownership.registry_refused:{kind}:{row.id}:{person.id}:{now.isoformat()}",
            now=now,
        )


def retry_registry(
    session: Session, *, user: User, vin: str, actor: Actor, now: datetime
) -> RegistryRefusal:
    """Send the refused request to the registry again, with the data as they are now (after
    the holder's details were corrected); an operator, or a dealer for a car their dealership
    sold. 409 `ownership.nothing_refused` when the registry refused nothing."""
    vehicle = _scrappable(session, user, vin)
    refusal = refused_registry(session, vehicle)
    if refusal is None:
        raise Conflict(
            "the registry refused nothing for this car", code="ownership.nothing_refused"
        )
    row = refusal.row
    row.registry_state = "pending"
    key = "transfer_id" if isinstance(row, Transfer) else "scrapping_id"
    enqueue(
        session,
        topic=REGISTRY_TOPIC,
        payload={key: row.id},
        dedupe_key=f"{REGISTRY_TOPIC}:{key}:{row.id}:retry:{now.isoformat()}",
        now=now,
    )
    record_event(
        session,
        vehicle,
        f"ownership.registry_{refusal.kind}_retried",
        customer_id=vehicle.owner_customer_id,
        actor=actor,
        now=now,
        from_state="refused",
        to_state="pending",
        details={"refused": refusal.reason},
    )
    return refusal
