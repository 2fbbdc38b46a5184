"""A service order's life: proposed, confirmed, parts reserved, done or cancelled.

Detection (`caas.upkeep.detection`) calls `propose`. With the owner's standing consent and a
quote within it, the order is confirmed at once in the first free slot of their workshop and
the owner is told; otherwise they are asked (in the app and by e-mail), and reminded once when
they have not answered after `REMIND_AFTER_HOURS`. Confirming takes a slot in the workshop's
calendar and reserves the parts from its stock when it has them; the workshop marks the parts
reserved otherwise, and records the work done: a service goes into the maintenance history
(which lifts an overdue compliance), and what the plan does not include is charged to the
customer's default card, with its invoice. Cancelling frees the slot and gives the parts back.
Every step is in the customer's history and notified; the car's screen shows what is booked.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from caas.accounts.models import User
from caas.billing import methods
from caas.billing import rules as billing_rules
from caas.billing import service as billing
from caas.billing.invoices import invoice_of_payment
from caas.billing.models import Payment
from caas.billing.provider import PaymentProvider
from caas.core.errors import Conflict, InvalidInput, NotFound
from caas.core.history import Actor, record
from caas.core.outbox import RetryLater, enqueue
from caas.core.outbox import cancel as cancel_message
from caas.maintenance import service as maintenance
from caas.notifications.service import notify_user
from caas.sales import service as sales
from caas.sales.models import Customer
from caas.upkeep import calendar, consent, quotes, workshops
from caas.upkeep.calendar import Slot, SlotTaken
from caas.upkeep.models import Part, ServiceOrder, Workshop, WorkshopStock
from caas.upkeep.rules import LEAD_HOURS, NEEDS, OPEN_STATES, ORDER, REMIND_AFTER_HOURS
from caas.vehicles.models import Vehicle

REMIND_TOPIC = "upkeep.remind"
CHARGE_TOPIC = "upkeep.charge"
TELL_CAR_TOPIC = "upkeep.tell_car"
CONSENT_ACTOR = Actor.system("standing consent")


def open_order(session: Session, vehicle_id: int, need: str) -> ServiceOrder | None:
    return session.scalars(
        select(ServiceOrder).where(
            ServiceOrder.vehicle_id == vehicle_id,
            ServiceOrder.need == need,
            ServiceOrder.state.in_(OPEN_STATES),
        )
    ).first()


def propose(
    session: Session,
    *,
    vehicle_id: int,
    need: str,
    detail: dict[str, object],
    actor: Actor,
    now: datetime,
) -> ServiceOrder | None:
    """Propose the fix of a car's need at its owner's workshop, quoted.

    None when the car already has an open order for the need (the partial unique index makes
    this hold under concurrent detections too) or has no owner to ask. With the owner's
    standing consent and a quote within it, the order is confirmed at once in the first free
    slot; otherwise the owner is asked.
    """
    if need not in NEEDS:
        raise InvalidInput(f"unknown need {need!r}", field="need", code="upkeep.unknown_need")
    vehicle = session.get_one(Vehicle, vehicle_id)
    if vehicle.owner_customer_id is None or open_order(session, vehicle_id, need) is not None:
        return None
    quote = quotes.quote_for(session, vehicle=vehicle, need=need, at=now)
    order = ServiceOrder(
        vehicle_id=vehicle_id,
        customer_id=vehicle.owner_customer_id,
        need=need,
        state="proposed",
        workshop_id=quote.workshop_id,
        currency=quote.currency,
        lines=quote.lines,
        net_minor=quote.net_minor,
        vat_minor=quote.vat_minor,
        gross_minor=quote.gross_minor,
        included_in_plan=quote.included_in_plan,
        detail=detail,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(order)
            session.flush()
    except IntegrityError:
        return None  # another detection made the open order for this need meanwhile
    record(
        session,
        at=now,
        actor=actor,
        subject_type="service_order",
        subject_id=order.id,
        customer_id=order.customer_id,
        event="upkeep.proposed",
        to_state="proposed",
        details={
            "vin": vehicle.vin,
            "need": need,
            "workshop_id": order.workshop_id,
            "gross_minor": order.gross_minor,
            "currency": order.currency,
            "included_in_plan": order.included_in_plan,
            **detail,
        },
    )
    preference = consent.preference_of(session, order.customer_id)
    if consent.covers(preference, order) and _place_in_first_free_slot(session, order, now=now):
        return order
    _ask(session, order, now=now)
    return order


def _place_in_first_free_slot(session: Session, order: ServiceOrder, *, now: datetime) -> bool:
    if order.workshop_id is None:
        return False
    workshop = session.get_one(Workshop, order.workshop_id)
    for slot in calendar.free_slots(session, workshop, order.need, after=earliest_start(now)):
        try:
            _confirm(session, order, workshop, slot.start, actor=CONSENT_ACTOR, now=now, auto=True)
        except SlotTaken:
            continue
        return True
    return False


def _ask(session: Session, order: ServiceOrder, *, now: datetime) -> None:
    slots = offered_slots(session, order, now=now)
    _tell(
        session,
        order,
        "upkeep.proposed",
        now=now,
        slots=[slot.start.isoformat() for slot in slots[:3]],
    )
    enqueue(
        session,
        topic=REMIND_TOPIC,
        payload={"order_id": order.id},
        dedupe_key=f"{REMIND_TOPIC}:{order.id}",
        now=now,
        run_after=now + timedelta(hours=REMIND_AFTER_HOURS),
    )


def earliest_start(now: datetime) -> datetime:
    return now + timedelta(hours=LEAD_HOURS)


def offered_slots(session: Session, order: ServiceOrder, *, now: datetime) -> list[Slot]:
    """The first free slots at the order's workshop, to choose from when confirming."""
    if order.workshop_id is None or order.state != "proposed":
        return []
    workshop = session.get_one(Workshop, order.workshop_id)
    return calendar.free_slots(session, workshop, order.need, after=earliest_start(now))


# --- who may see an order ------------------------------------------------------------------


def _locked(session: Session, order_id: int) -> ServiceOrder | None:
    return session.scalars(
        select(ServiceOrder).where(ServiceOrder.id == order_id).with_for_update()
    ).first()


def orders_of_customer(session: Session, customer_id: int) -> list[ServiceOrder]:
    return list(
        session.scalars(
            select(ServiceOrder)
            .where(ServiceOrder.customer_id == customer_id)
            .order_by(ServiceOrder.id.desc())
        )
    )


def order_for_customer(session: Session, user: User, order_id: int) -> ServiceOrder:
    """The customer's own order, locked; anyone else's is not found."""
    customer = sales.customer_of_user(session, user)
    order = _locked(session, order_id)
    if order is None or order.customer_id != customer.id:
        raise NotFound("no such service order", code="upkeep.order_not_found")
    return order


def order_for_workshop(session: Session, user: User, order_id: int) -> ServiceOrder:
    """An order booked at the workshop the user works at, locked; any other is not found."""
    workshop = workshops.workshop_of_staff(session, user.id)
    order = _locked(session, order_id)
    if order is None or workshop is None or order.workshop_id != workshop.id:
        raise NotFound("no such service order", code="upkeep.order_not_found")
    return order


# --- commands ------------------------------------------------------------------------------


def confirm(
    session: Session, order: ServiceOrder, *, slot_start: datetime, actor: Actor, now: datetime
) -> ServiceOrder:
    """The customer confirms a proposed order in a slot of its workshop (`SlotTaken`, with the
    next free slots, when someone else has just taken it)."""
    if order.workshop_id is None:
        raise Conflict("no workshop can take this order", code="upkeep.no_workshop")
    workshop = session.get_one(Workshop, order.workshop_id)
    ORDER.check(order.state, "confirmed")
    if slot_start < earliest_start(now) or not calendar.is_opening_start(
        session, workshop, order.need, slot_start
    ):
        raise InvalidInput(
            "the workshop does not take this need at that time",
            field="slot_start",
            code="upkeep.not_a_slot",
        )
    _confirm(session, order, workshop, slot_start, actor=actor, now=now, auto=False)
    return order


def _confirm(
    session: Session,
    order: ServiceOrder,
    workshop: Workshop,
    start: datetime,
    *,
    actor: Actor,
    now: datetime,
    auto: bool,
) -> None:
    slot = calendar.book(session, order, workshop, start, now=now)
    order.slot_start, order.slot_end, order.bay = slot.start, slot.end, slot.bay
    order.auto_confirmed = auto
    order.confirmed_at = now
    _move(session, order, "confirmed", actor=actor, now=now, details={"slot": slot.as_json()})
    cancel_message(session, dedupe_key=f"{REMIND_TOPIC}:{order.id}", now=now)
    if _take_parts(session, order):
        _move(session, order, "parts_reserved", actor=actor, now=now)
    _tell(session, order, "upkeep.placed" if auto else "upkeep.confirmed", now=now)
    _tell_car(session, order, now=now)


def reserve_parts(
    session: Session, order: ServiceOrder, *, actor: Actor, now: datetime
) -> ServiceOrder:
    """The workshop sets the parts aside for a confirmed order (once it has them in stock)."""
    ORDER.check(order.state, "parts_reserved")
    if not _take_parts(session, order):
        raise Conflict(
            "the workshop does not have all the parts in stock",
            code="upkeep.out_of_stock",
        )
    _move(session, order, "parts_reserved", actor=actor, now=now)
    _tell(session, order, "upkeep.parts_reserved", now=now)
    return order


def complete(
    session: Session, order: ServiceOrder, *, workshop_user: User, odometer_km: int, now: datetime
) -> ServiceOrder:
    """The workshop records the work done: a service goes into the maintenance history, and
    what the plan does not include is charged to the customer's default card."""
    ORDER.check(order.state, "done")
    if odometer_km < 0:
        raise InvalidInput("the odometer cannot be negative", field="odometer_km")
    vehicle = session.get_one(Vehicle, order.vehicle_id)
    actor = Actor(kind="workshop", label=workshop_user.email, user_id=workshop_user.id)
    if order.need == "service":
        service_record = maintenance.record_service(
            session,
            vin=vehicle.vin,
            workshop=workshop_user,
            performed_at=now,
            odometer_km=odometer_km,
            work_description=_work_description(order),
            included_in_plan=order.included_in_plan,
            now=now,
        )
        order.maintenance_record_id = service_record.id
    order.done_at = now
    order.detail = {**order.detail, "odometer_km": odometer_km}
    _move(session, order, "done", actor=actor, now=now)
    if order.gross_minor > 0:
        _charge(session, order, now=now)
    _tell(session, order, "upkeep.done", now=now)
    _tell_car(session, order, now=now)
    return order


def cancel(
    session: Session, order: ServiceOrder, *, actor: Actor, reason: str, now: datetime
) -> ServiceOrder:
    """The customer or the workshop calls the order off: its slot and parts are freed."""
    was = order.state
    ORDER.check(was, "cancelled")
    calendar.release(session, order)
    if was == "parts_reserved":
        _give_back_parts(session, order)
    cancel_message(session, dedupe_key=f"{REMIND_TOPIC}:{order.id}", now=now)
    order.cancelled_at = now
    order.cancel_reason = reason[:300] or None
    _move(session, order, "cancelled", actor=actor, now=now, details={"reason": reason[:300]})
    _tell(session, order, "upkeep.cancelled", now=now, reason=reason[:300], by=actor.kind)
    if was != "proposed":
        _tell_car(session, order, now=now)
    return order


def remind(session: Session, *, order_id: int, now: datetime) -> bool:
    """Remind the customer of a proposal they have not answered, once."""
    order = _locked(session, order_id)
    if order is None or order.state != "proposed" or order.reminded_at is not None:
        return False
    order.reminded_at = now
    record(
        session,
        at=now,
        actor=Actor.system(),
        subject_type="service_order",
        subject_id=order.id,
        customer_id=order.customer_id,
        event="upkeep.reminded",
    )
    _tell(
        session,
        order,
        "upkeep.reminder",
        now=now,
        slots=[slot.start.isoformat() for slot in offered_slots(session, order, now=now)[:3]],
    )
    return True


# --- parts ---------------------------------------------------------------------------------


def _part_lines(session: Session, order: ServiceOrder) -> list[tuple[int, int]]:
    """(part id, quantity) of the order's parts (labour takes no stock)."""
    codes = {str(line["part"]): int(str(line["quantity"])) for line in order.lines}
    parts = session.scalars(
        select(Part).where(Part.code.in_(codes), Part.kind == "part").order_by(Part.id)
    )
    return [(part.id, codes[part.code]) for part in parts]


def _take_parts(session: Session, order: ServiceOrder) -> bool:
    """Take the order's parts from its workshop's stock, all or none."""
    assert order.workshop_id is not None
    with session.begin_nested() as savepoint:
        for part_id, quantity in _part_lines(session, order):
            taken = session.execute(
                update(WorkshopStock)
                .where(
                    WorkshopStock.workshop_id == order.workshop_id,
                    WorkshopStock.part_id == part_id,
                    WorkshopStock.on_hand >= quantity,
                )
                .values(on_hand=WorkshopStock.on_hand - quantity)
                .returning(WorkshopStock.id)
            ).first()
            if taken is None:
                savepoint.rollback()
                return False
    return True


def _give_back_parts(session: Session, order: ServiceOrder) -> None:
    for part_id, quantity in _part_lines(session, order):
        session.execute(
            update(WorkshopStock)
            .where(
                WorkshopStock.workshop_id == order.workshop_id,
                WorkshopStock.part_id == part_id,
            )
            .values(on_hand=WorkshopStock.on_hand + quantity)
        )


# --- money ---------------------------------------------------------------------------------


def _charge(session: Session, order: ServiceOrder, *, now: datetime) -> None:
    """Start the payment of the quote on the customer's default card; the charge job takes
    it (`charge`). No card: the order is done and the charge is left to the operator."""
    customer = session.get_one(Customer, order.customer_id)
    card = methods.charge_token(session, customer_id=customer.id, stored=None)
    if card is None:
        order.detail = {**order.detail, "charge": "no_payment_method"}
        record(
            session,
            at=now,
            actor=Actor.system(),
            subject_type="service_order",
            subject_id=order.id,
            customer_id=order.customer_id,
            event="upkeep.charge_failed",
            details={"reason": "no_payment_method"},
        )
        return
    lines = [
        billing_rules.LineDraft(
            description=str(line["description"]),
            net_minor=int(str(line["net_minor"])),
            vat_rate_bp=int(str(line["vat_rate_bp"])),
            vat_minor=int(str(line["vat_minor"])),
        )
        for line in order.lines
        if int(str(line["net_minor"])) > 0
    ]
    payment = billing.begin_store_payment(
        session,
        customer_id=customer.id,
        kind="upkeep",
        lines=lines,
        currency=order.currency,
        country=customer.country,
        payment_method=card,
        idempotency_key=f"upkeep:{order.id}",
        actor=Actor.system(),
        now=now,
        details={"service_order_id": order.id},
    )
    order.payment_id = payment.id
    enqueue(
        session,
        topic=CHARGE_TOPIC,
        payload={"order_id": order.id, "payment_id": payment.id, "card": card},
        dedupe_key=f"{CHARGE_TOPIC}:{order.id}",
        now=now,
    )


def charge(
    session: Session,
    *,
    order_id: int,
    payment_id: int,
    card: str,
    provider: PaymentProvider,
    now: datetime,
) -> ServiceOrder:
    """The charge job: authorise and capture the order's payment; its invoice is issued on
    capture and kept on the order. Raises `RetryLater` while the provider has not settled."""
    actor = Actor.system()
    payment = session.get_one(Payment, payment_id)
    payment = billing.authorise_payment(
        session, payment, payment_method=card, provider=provider, actor=actor, now=now
    )
    if payment.state == "authorised":
        payment = billing.capture_payment(session, payment, provider=provider, actor=actor, now=now)
    order = session.get_one(ServiceOrder, order_id)
    if payment.state in ("pending", "authorised"):
        raise RetryLater(f"payment {payment.id} is {payment.state}")
    if payment.state == "captured":
        invoice = invoice_of_payment(session, payment.id)
        order.invoice_id = invoice.id if invoice is not None else None
        event = "upkeep.charged"
    else:
        event = "upkeep.charge_failed"
    record(
        session,
        at=now,
        actor=actor,
        subject_type="service_order",
        subject_id=order.id,
        customer_id=order.customer_id,
        event=event,
        details={"payment_id": payment.id, "state": payment.state},
    )
    return order


# --- telling -------------------------------------------------------------------------------


def _move(
    session: Session,
    order: ServiceOrder,
    target: str,
    *,
    actor: Actor,
    now: datetime,
    details: dict[str, object] | None = None,
) -> None:
    ORDER.check(order.state, target)
    before = order.state
    order.state = target
    order.updated_at = now
    session.flush()
    record(
        session,
        at=now,
        actor=actor,
        subject_type="service_order",
        subject_id=order.id,
        customer_id=order.customer_id,
        event=f"upkeep.{target}",
        from_state=before,
        to_state=target,
        details={"need": order.need, **(details or {})},
    )


def _work_description(order: ServiceOrder) -> str:
    return "; ".join(str(line["description"]) for line in order.lines)


def _tell(
    session: Session, order: ServiceOrder, kind: str, *, now: datetime, **extra: object
) -> None:
    customer = session.get_one(Customer, order.customer_id)
    vehicle = session.get_one(Vehicle, order.vehicle_id)
    workshop = session.get(Workshop, order.workshop_id) if order.workshop_id else None
    notify_user(
        session,
        user_id=customer.user_id,
        email=customer.email,
        language=customer.language,
        kind=kind,
        context={
            "name": customer.first_name,
            "vin": vehicle.vin,
            "need": order.need,
            "order_id": order.id,
            "workshop": workshop.name if workshop else "",
            "address": f"{workshop.address}, {workshop.city}" if workshop else "",
            "timezone": workshop.timezone if workshop else "",
            "country": customer.country,
            "slot_start": order.slot_start.isoformat() if order.slot_start else "",
            "gross_minor": order.gross_minor,
            "currency": order.currency,
            "included": order.included_in_plan,
            **extra,
        },
        dedupe_key=f"{kind}:{order.id}",
        now=now,
    )


def _tell_car(session: Session, order: ServiceOrder, *, now: datetime) -> None:
    """Queue a new configuration for the car, whose messages show what is booked
    (`car_messages`); the worker signs and sends it."""
    enqueue(
        session,
        topic=TELL_CAR_TOPIC,
        payload={"vehicle_id": order.vehicle_id},
        dedupe_key=f"{TELL_CAR_TOPIC}:{order.id}:{order.state}",
        now=now,
    )
