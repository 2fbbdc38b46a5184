"""A service order's life: proposed under or over the standing consent, reminded once,
confirmed, done (maintenance history, compliance, the charge) or cancelled."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from caas.accounts.models import User
from caas.billing import methods
from caas.billing.models import Invoice, Payment
from caas.billing.provider import SandboxProvider
from caas.core.clock import FixedClock
from caas.core.history import Actor, subject_history
from caas.core.outbox import Relay
from caas.core.settings import Settings
from caas.maintenance import service as maintenance
from caas.maintenance.models import MaintenanceRecord
from caas.notifications.models import Notification
from caas.protocol.payments import CARD_SUCCEEDS
from caas.upkeep import consent, orders
from caas.upkeep.jobs import handlers
from caas.upkeep.models import BayBooking, Part, ServiceOrder, Workshop, WorkshopStock
from caas.vehicles.models import Vehicle
from tests.billing.conftest import PaymentSandbox, payment_sandbox, settings
from tests.files.customers import SoldCustomer, car_for, sold_customer

__all__ = ["payment_sandbox", "settings"]

VIN = "UPK0RDERS00000001"
# Delivered long enough ago that its first service (12 months) is overdue on the test clock's
# day (15 January 2026), yet inside the sale's 48 months of included maintenance.
DELIVERED = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
DETECTED = {"signal": "Vehicle.Service.DistanceToService", "value": 0}


@pytest.fixture
def owner(db: Session, settings: Settings) -> SoldCustomer:
    return sold_customer(db, settings=settings, now=DELIVERED - timedelta(days=60))


@pytest.fixture
def car(db: Session, owner: SoldCustomer) -> Vehicle:
    vehicle = car_for(
        db, owner.sale, vin=VIN, built_at=DELIVERED - timedelta(days=20), delivered_at=DELIVERED
    )
    db.commit()
    return vehicle


def allow(db: Session, owner: SoldCustomer, limit_minor: int, now: datetime) -> None:
    consent.set_preferences(
        db,
        customer=owner.customer,
        auto_order=True,
        auto_limit_minor=limit_minor,
        preferred_workshop_id=None,
        actor=Actor(kind="customer", label=owner.email, user_id=owner.user.id),
        now=now,
    )


def propose(db: Session, car: Vehicle, need: str, now: datetime) -> ServiceOrder:
    order = orders.propose(
        db, vehicle_id=car.id, need=need, detail=DETECTED, actor=Actor.system("detection"), now=now
    )
    assert order is not None
    db.commit()
    return order


def kinds(db: Session, user_id: int) -> list[str]:
    return list(
        db.scalars(
            select(Notification.kind)
            .where(Notification.user_id == user_id, Notification.kind.like("upkeep.%"))
            .order_by(Notification.id)
        )
    )


def stock(db: Session, workshop_id: int, part: str) -> int:
    return db.scalars(
        select(WorkshopStock.on_hand)
        .join(Part, Part.id == WorkshopStock.part_id)
        .where(WorkshopStock.workshop_id == workshop_id, Part.code == part)
    ).one()


def relay(settings: Settings, sessions: sessionmaker[Session], clock: FixedClock) -> Relay:
    return Relay(sessions=sessions, clock=clock, handlers=handlers(settings, clock))


def run_until_idle(relay: Relay) -> int:
    handled = 0
    while count := relay.run_once():
        handled += count
    return handled


def workshop_user(db: Session) -> User:
    return db.scalars(select(User).where(User.email == "workshop@caas.example")).one()


def test_under_the_limit_the_order_is_placed_in_the_first_free_slot_and_the_customer_told(
    db: Session, car: Vehicle, owner: SoldCustomer, clock: FixedClock
) -> None:
    now = clock.now()  # Thursday 15 January 2026, 10:00 in Madrid
    allow(db, owner, 60_000, now)
    order = propose(db, car, "tyre_tread", now)
    # 4 tyres at 89 EUR and 60 EUR of labour, 21 % VAT: not in the plan.
    assert (order.net_minor, order.vat_minor, order.gross_minor) == (41_600, 8_736, 50_336)
    assert order.included_in_plan is False
    assert order.state == "parts_reserved" and order.auto_confirmed
    workshop = db.get_one(Workshop, order.workshop_id)
    assert workshop.name == "Taller Norte"  # the nearest to the customer's 28013
    # Two hours' lead: 12:00 local; 90 minutes do not fit before the 13:00 lunch break.
    assert order.slot_start == datetime(2026, 1, 15, 13, 0, tzinfo=UTC)
    assert order.slot_end == datetime(2026, 1, 15, 14, 30, tzinfo=UTC)
    assert stock(db, workshop.id, "tyre") == 20 - 4
    assert kinds(db, owner.user.id) == ["upkeep.placed"]
    events = [e.event for e in subject_history(db, "service_order", order.id)]
    assert events == ["upkeep.proposed", "upkeep.confirmed", "upkeep.parts_reserved"]


def test_over_the_limit_the_customer_is_asked_and_reminded_exactly_once(
    db: Session,
    car: Vehicle,
    owner: SoldCustomer,
    clock: FixedClock,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    allow(db, owner, 50_000, clock.now())  # 503.36 EUR is over it
    order = propose(db, car, "tyre_tread", clock.now())
    assert order.state == "proposed" and order.slot_start is None
    assert kinds(db, owner.user.id) == ["upkeep.proposed"]
    assert db.scalar(select(func.count(BayBooking.id))) == 0
    worker = relay(settings, sessions, clock)
    run_until_idle(worker)
    assert kinds(db, owner.user.id) == ["upkeep.proposed"]  # not yet: 48 hours
    clock.advance(timedelta(hours=48, minutes=1))
    run_until_idle(worker)
    clock.advance(timedelta(days=10))
    run_until_idle(worker)
    assert kinds(db, owner.user.id) == ["upkeep.proposed", "upkeep.reminder"]
    db.expire_all()
    assert db.get_one(ServiceOrder, order.id).reminded_at is not None


def test_without_consent_even_an_included_order_is_asked_and_one_open_order_per_need(
    db: Session, car: Vehicle, owner: SoldCustomer, clock: FixedClock
) -> None:
    order = propose(db, car, "washer_fluid", clock.now())
    assert order.included_in_plan and order.gross_minor == 0
    assert order.state == "proposed"
    again = orders.propose(
        db,
        vehicle_id=car.id,
        need="washer_fluid",
        detail=DETECTED,
        actor=Actor.system("detection"),
        now=clock.now(),
    )
    assert again is None


def test_a_confirmed_reminder_is_not_sent_and_a_slot_outside_hours_is_refused(
    db: Session,
    car: Vehicle,
    owner: SoldCustomer,
    clock: FixedClock,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    order = propose(db, car, "battery_12v", clock.now())
    actor = Actor(kind="customer", label=owner.email, user_id=owner.user.id)
    sunday = datetime(2026, 1, 18, 9, 0, tzinfo=UTC)
    with pytest.raises(Exception, match="does not take this need"):
        orders.confirm(db, order, slot_start=sunday, actor=actor, now=clock.now())
    first = orders.offered_slots(db, order, now=clock.now())[0]
    orders.confirm(db, order, slot_start=first.start, actor=actor, now=clock.now())
    db.commit()
    assert order.state == "parts_reserved" and order.slot_start == first.start
    clock.advance(timedelta(days=3))
    run_until_idle(relay(settings, sessions, clock))
    assert kinds(db, owner.user.id) == ["upkeep.proposed", "upkeep.confirmed"]


def test_done_service_goes_into_the_maintenance_history_and_lifts_the_non_compliance(
    db: Session, car: Vehicle, owner: SoldCustomer, clock: FixedClock
) -> None:
    today = date(2026, 1, 15)
    assert maintenance.maintenance_summary(db, car, today=today).status == "overdue"
    allow(db, owner, 0, clock.now())  # included in the plan: 0 is within any limit
    order = propose(db, car, "service", clock.now())
    assert order.included_in_plan and order.gross_minor == 0
    assert order.state == "parts_reserved"
    assert all(line["net_minor"] == 0 for line in order.lines)
    clock.set(order.slot_end or clock.now())
    orders.complete(db, order, workshop_user=workshop_user(db), odometer_km=21_500, now=clock.now())
    db.commit()
    assert order.state == "done" and order.payment_id is None and order.invoice_id is None
    service = db.get_one(MaintenanceRecord, order.maintenance_record_id)
    assert service.odometer_km == 21_500 and service.included_in_plan
    assert maintenance.maintenance_summary(db, car, today=today).status == "compliant"
    assert kinds(db, owner.user.id)[-1] == "upkeep.done"
    assert (
        db.scalar(select(func.count(Payment.id)).where(Payment.customer_id == owner.customer.id))
        == 0
    )


def test_work_outside_the_plan_is_charged_to_the_default_card_with_its_invoice(
    db: Session,
    car: Vehicle,
    owner: SoldCustomer,
    clock: FixedClock,
    settings: Settings,
    sessions: sessionmaker[Session],
    payment_sandbox: PaymentSandbox,
) -> None:
    actor = Actor(kind="customer", label=owner.email, user_id=owner.user.id)
    with SandboxProvider.from_settings(settings) as provider:
        methods.add(
            db,
            user=owner.user,
            card_token=payment_sandbox.token(CARD_SUCCEEDS),
            provider=provider,
            actor=actor,
            now=clock.now(),
        )
    allow(db, owner, 100_000, clock.now())
    order = propose(db, car, "brake_pads", clock.now())
    assert order.state == "parts_reserved" and not order.included_in_plan
    orders.complete(db, order, workshop_user=workshop_user(db), odometer_km=30_000, now=clock.now())
    db.commit()
    assert order.payment_id is not None and order.invoice_id is None
    assert order.maintenance_record_id is None  # brake pads are not the periodic service
    run_until_idle(relay(settings, sessions, clock))
    db.expire_all()
    done = db.get_one(ServiceOrder, order.id)
    payment = db.get_one(Payment, done.payment_id)
    assert payment.state == "captured" and payment.amount_minor == done.gross_minor
    invoice = db.get_one(Invoice, done.invoice_id)
    assert invoice.gross_minor == done.gross_minor == 17_545  # (75 + 70) EUR + 21 %
    events = [e.event for e in subject_history(db, "service_order", order.id)]
    assert events[-1] == "upkeep.charged"


def test_cancel_frees_the_slot_and_gives_the_parts_back(
    db: Session, car: Vehicle, owner: SoldCustomer, clock: FixedClock
) -> None:
    allow(db, owner, 100_000, clock.now())
    order = propose(db, car, "tyre_tread", clock.now())
    workshop = db.get_one(Workshop, order.workshop_id)
    slot = order.slot_start
    assert stock(db, workshop.id, "tyre") == 16
    assert db.scalar(select(func.count(BayBooking.id))) == 3  # 90 minutes, 30-minute grid
    actor = Actor(kind="customer", label=owner.email, user_id=owner.user.id)
    orders.cancel(db, order, actor=actor, reason="I will do it myself", now=clock.now())
    db.commit()
    assert order.state == "cancelled"
    assert stock(db, workshop.id, "tyre") == 20
    assert db.scalar(select(func.count(BayBooking.id))) == 0
    again = propose(db, car, "tyre_tread", clock.now())  # a new order for the need is allowed
    assert again.slot_start == slot  # the freed slot is the first free one again
    assert kinds(db, owner.user.id) == ["upkeep.placed", "upkeep.cancelled", "upkeep.placed"]


def test_work_done_for_a_customer_without_a_card_is_recorded_and_left_to_the_operator(
    db: Session, car: Vehicle, owner: SoldCustomer, clock: FixedClock
) -> None:
    allow(db, owner, 100_000, clock.now())
    order = propose(db, car, "battery_12v", clock.now())
    orders.complete(db, order, workshop_user=workshop_user(db), odometer_km=30_000, now=clock.now())
    db.commit()
    assert order.state == "done" and order.payment_id is None
    assert order.detail["charge"] == "no_payment_method"
    events = [e.event for e in subject_history(db, "service_order", order.id)]
    assert events[-2:] == ["upkeep.done", "upkeep.charge_failed"]
    again = propose(db, car, "battery_12v", clock.now())  # done: a new order may follow
    assert again.id != order.id
