"""The rules of registration: submitting the car to its country's registry, applying the
answer, the dealer's correction of the holder's data and the retry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.accounts.models import Dealership
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.history import Actor, record
from caas.core.outbox import enqueue
from caas.registration.base import Registered, RegistrationAdapter, RegistryFault, Rejected
from caas.registration.countries import adapter_for
from caas.registration.models import Registration
from caas.registration.rules import CORRECTABLE_ORDER_STATES, REGISTRATION
from caas.registration.schemas import CustomerCorrection
from caas.sales import identity
from caas.sales.models import Customer, Sale
from caas.sales.service import lock_sale, transition_order
from caas.vehicles.models import Vehicle
from caas.vehicles.service import vehicle_for_sale

log = structlog.get_logger(__name__)

SUBMIT_TOPIC = "registration.submit"

# Sends a request to a registry; answers (HTTP status, JSON body). Raises RegistryUnavailable
# when the registry cannot be reached.
SendToRegistry = Callable[[RegistrationAdapter, dict[str, Any]], tuple[int, Any]]


def registration_of(session: Session, sale_id: int, *, lock: bool = False) -> Registration | None:
    query = select(Registration).where(Registration.sale_id == sale_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def get_registration(session: Session, sale: Sale) -> Registration:
    registration = registration_of(session, sale.id)
    if registration is None:
        raise NotFound(
            "this order has not been submitted for registration yet",
            code="registration.not_started",
        )
    return registration


def request_registration(
    session: Session, sale: Sale, *, actor: Actor, now: datetime
) -> Registration:
    """Submit `sale`'s car to the registry of its country (the order is `registering`).

    The request itself leaves through the outbox after the caller commits, once per attempt.
    """
    if sale.state != "registering":
        raise Conflict(
            f"an order in state {sale.state!r} is not being registered",
            code="registration.order_not_registering",
        )
    adapter = adapter_for(sale.country)
    registration = registration_of(session, sale.id, lock=True)
    from_state = None
    if registration is None:
        registration = Registration(
            sale_id=sale.id,
            country=sale.country,
            state="submitted",
            attempts=0,
            created_at=now,
            submitted_at=now,
            updated_at=now,
        )
        session.add(registration)
    else:
        REGISTRATION.check(registration.state, "submitted")
        from_state = registration.state
    registration.state = "submitted"
    registration.attempts += 1
    registration.rejection_reason = None
    registration.rejection_field = None
    registration.registry_field = None
    registration.submitted_at = now
    registration.answered_at = None
    registration.rejected_at = None
    registration.updated_at = now
    session.flush()
    record(
        session,
        at=now,
        actor=actor,
        subject_type="registration",
        subject_id=registration.id,
        event="registration.submitted",
        from_state=from_state,
        to_state="submitted",
        details={"attempt": registration.attempts, "authority": adapter.authority},
    )
    enqueue(
        session,
        topic=SUBMIT_TOPIC,
        payload={"sale_id": sale.id, "attempt": registration.attempts},
        dedupe_key=f"{SUBMIT_TOPIC}:{sale.id}:{registration.attempts}",
        now=now,
    )
    return registration


def submit_attempt(
    session: Session, *, sale_id: int, attempt: int, send: SendToRegistry, now: datetime
) -> None:
    """The outbox job: send one attempt to the registry and apply its answer.

    Raises RegistryUnavailable (retry later) or RegistryFault (an answer we cannot accept);
    either way nothing is written. An attempt that is no longer the current one is dropped.
    """
    sale = lock_sale(session, sale_id)
    registration = registration_of(session, sale_id, lock=True)
    if (
        registration is None
        or registration.attempts != attempt
        or registration.state != "submitted"
        or sale.state != "registering"
    ):
        log.info("registration.stale_attempt", sale_id=sale_id, attempt=attempt)
        return
    vehicle = vehicle_for_sale(session, sale.id)
    if vehicle is None:
        raise Conflict("the car of this order has no record yet", code="registration.no_vehicle")
    customer = session.get_one(Customer, sale.customer_id)
    dealership = session.get_one(Dealership, sale.dealership_id)
    adapter = adapter_for(registration.country)
    request = adapter.build_request(customer, vehicle, dealership)
    status, body = send(adapter, request)
    outcome = adapter.parse(status, body)
    registration.request_payload = request
    registration.response_payload = body if isinstance(body, dict) else {"body": body}
    registration.answered_at = now
    registration.updated_at = now
    registry = Actor(kind="registry", label=adapter.authority)
    if isinstance(outcome, Registered):
        _registered(session, sale, registration, vehicle, outcome, actor=registry, now=now)
    else:
        _rejected(session, sale, registration, outcome, actor=registry, now=now)


def _registered(
    session: Session,
    sale: Sale,
    registration: Registration,
    vehicle: Vehicle,
    outcome: Registered,
    *,
    actor: Actor,
    now: datetime,
) -> None:
    holder = session.scalar(
        select(Vehicle.id).where(Vehicle.plate == outcome.plate, Vehicle.id != vehicle.id)
    )
    if holder is not None:
        raise RegistryFault(f"{actor.label} returned {outcome.plate!r}, already on another car")
    REGISTRATION.check(registration.state, "registered")
    registration.state = "registered"
    registration.plate = outcome.plate
    registration.registered_at = now
    vehicle.plate = outcome.plate
    vehicle.registered_country = registration.country
    vehicle.registered_at = now
    details = {"plate": outcome.plate, "authority": actor.label, "attempt": registration.attempts}
    record(
        session,
        at=now,
        actor=actor,
        subject_type="registration",
        subject_id=registration.id,
        event="registration.registered",
        from_state="submitted",
        to_state="registered",
        details=details,
    )
    record(
        session,
        at=now,
        actor=actor,
        subject_type="vehicle",
        subject_id=vehicle.id,
        event="car.registered",
        details={"plate": outcome.plate, "country": registration.country},
    )
    transition_order(session, sale, "registered", actor=actor, now=now, details=details)


def _rejected(
    session: Session,
    sale: Sale,
    registration: Registration,
    outcome: Rejected,
    *,
    actor: Actor,
    now: datetime,
) -> None:
    REGISTRATION.check(registration.state, "rejected")
    registration.state = "rejected"
    registration.rejection_reason = outcome.reason
    registration.rejection_field = outcome.field
    registration.registry_field = outcome.registry_field
    registration.rejected_at = now
    details = {
        "reason": outcome.reason,
        "field": outcome.field,
        "registry_field": outcome.registry_field,
        "authority": actor.label,
        "attempt": registration.attempts,
    }
    record(
        session,
        at=now,
        actor=actor,
        subject_type="registration",
        subject_id=registration.id,
        event="registration.rejected",
        from_state="submitted",
        to_state="rejected",
        details=details,
    )
    transition_order(session, sale, "registration_rejected", actor=actor, now=now, details=details)


def retry_registration(
    session: Session, sale: Sale, *, actor: Actor, now: datetime
) -> Registration:
    """After a refusal (and usually a correction): the order goes back to `registering` and
    the request is submitted again with the customer's current data."""
    registration = get_registration(session, sale)
    transition_order(
        session,
        sale,
        "registering",
        actor=actor,
        now=now,
        details={"attempt": registration.attempts + 1, "retry": True},
    )
    return request_registration(session, sale, actor=actor, now=now)


def correct_customer(
    session: Session, sale: Sale, *, correction: CustomerCorrection, actor: Actor, now: datetime
) -> Customer:
    """Correct the holder's name or address before the car is registered; the order's history
    keeps what changed, before and after."""
    if sale.state not in CORRECTABLE_ORDER_STATES:
        raise Conflict(
            "the car is registered: the holder's data can no longer be corrected here",
            code="customer.registration_data_locked",
            state=sale.state,
        )
    customer = session.scalars(
        select(Customer).where(Customer.id == sale.customer_id).with_for_update()
    ).one()
    changes = correction.changes()
    if "postal_code" in changes:
        try:
            changes["postal_code"] = identity.normalise_postal_code(
                customer.country, changes["postal_code"]
            )
        except ValueError as error:
            raise InvalidInput(str(error), field="postal_code") from None
    before = {name: getattr(customer, name) for name in changes}
    changed = {name: value for name, value in changes.items() if before[name] != value}
    if not changed:
        return customer
    for name, value in changed.items():
        setattr(customer, name, value)
    record(
        session,
        at=now,
        actor=actor,
        subject_type="order",
        subject_id=sale.id,
        customer_id=customer.id,
        event="customer.corrected",
        details={"before": {name: before[name] for name in changed}, "after": changed},
    )
    return customer
